"""Users, permissions and the user manager."""

from .users import Permission, User, UserManager

__all__ = ["Permission", "User", "UserManager"]
