import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure a staff superuser exists. Credentials come from HASHX_ADMIN_USERNAME / "
        "HASHX_ADMIN_PASSWORD (and HASHX_ADMIN_EMAIL); without them a password is generated "
        "once, printed, and saved to var/admin-credentials."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = os.environ.get("HASHX_ADMIN_USERNAME", "admin")
        password = os.environ.get("HASHX_ADMIN_PASSWORD", "")
        email = os.environ.get("HASHX_ADMIN_EMAIL", "")
        saved = Path(settings.VAR_DIR) / "admin-credentials"

        user = User.objects.filter(username=username).first()
        if user is not None:
            if password and not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
                self.stdout.write(
                    f"staff superuser {username!r}: password set from HASHX_ADMIN_PASSWORD"
                )
            elif saved.exists() and not password:
                self.stdout.write(f"staff superuser {username!r}: credentials in {saved}")
            else:
                self.stdout.write(f"staff superuser {username!r} exists")
            return

        if not password:
            password = secrets.token_urlsafe(18)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.touch(mode=0o600)
            saved.write_text(f"username={username}\npassword={password}\n")
            self.stdout.write(
                self.style.WARNING(
                    f"created staff superuser {username!r} with password {password}\n"
                    f"  (saved to {saved}; set HASHX_ADMIN_PASSWORD to choose your own)"
                )
            )
        else:
            self.stdout.write(
                f"created staff superuser {username!r} (password from HASHX_ADMIN_PASSWORD)"
            )
        User.objects.create_superuser(username=username, email=email, password=password)
