"""Reporting: tables of results, paired statistics, plots and the HTML page."""
