"""The plugin modules here are entry-point targets for tests/sims/test_plugins.py, one of them
deliberately broken (it raises on import); they are not test modules, so pytest (and its
--doctest-modules) must not import them."""

collect_ignore = ["bad_contract.py", "broken_import.py", "tiny_topr.py"]
