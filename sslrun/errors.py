"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input (config, path, data). The CLI prints it in one line and exits with status 2."""
