"""A job that dies before its first step, as a missing dependency makes train_grpo.py die."""

import fleet_test_module_that_does_not_exist  # noqa: F401
