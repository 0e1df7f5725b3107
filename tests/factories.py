"""Constants and builders shared by tests."""

# The password every test user gets (never a real one; asserted absent from logs and audit).
TEST_PASSWORD = "correct horse battery staple 42"
