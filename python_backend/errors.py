class BadRequest(ValueError):
    """A request the model cannot serve; its message goes back to that client alone, as a Triton error."""
