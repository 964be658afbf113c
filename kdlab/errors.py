"""The one exception type that reaches users as a friendly, one-line message."""


class KdlabError(Exception):
    """A problem with the user's input (recipe, file, checkpoint, option).

    The CLI prints ``str(error)`` on one line and exits with code 2, no traceback.
    The message should name the problem and the fix.
    """
