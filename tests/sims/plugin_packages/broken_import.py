"""A plugin whose module fails to import (a missing dependency)."""

import a_module_that_does_not_exist  # noqa: F401
