"""The sizes a template and what it renders may reach (shared by the plain path and the sandbox)."""

MAX_TEMPLATE_CHARS = 10_000
MAX_VALUE_LEN = 100_000
