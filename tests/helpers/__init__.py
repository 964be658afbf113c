"""Plain helpers shared by test modules, one module per concept: functions, classes and constants a test calls.

Fixtures (what a test names as an argument) live in ``conftest.py`` files instead: ``tests/<package>/conftest.py``
for one package's tests. No test module imports another test module (``tests/test_layout.py`` checks it);
what two of them share lives here or in a conftest.
"""
