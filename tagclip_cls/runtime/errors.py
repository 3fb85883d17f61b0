"""The one exception type for user mistakes (bad files, bad arguments).

Command-line tools catch it and print its message as a one-line error; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: its message names the file and what is wrong."""
