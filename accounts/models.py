"""Accounts use Django's own `auth.User`; roles are `auth.Group`s named after `Role`."""
