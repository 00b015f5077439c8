"""`make run` ensures a staff superuser: from the environment, or generated once and saved."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_a_generated_password_is_saved_once_and_works(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HASHX_ADMIN_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    call_command("ensure_superuser")
    saved = (tmp_path / "admin-credentials").read_text()
    password = saved.split("password=")[1].strip()
    assert password in capsys.readouterr().out
    user = get_user_model().objects.get(username="admin")
    assert user.is_staff and user.is_superuser and user.check_password(password)

    call_command("ensure_superuser")
    assert (tmp_path / "admin-credentials").read_text() == saved
    assert "credentials in" in capsys.readouterr().out


def test_the_password_can_come_from_the_environment(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("HASHX_ADMIN_USERNAME", "staff")
    monkeypatch.setenv("HASHX_ADMIN_PASSWORD", "a long chosen passphrase")
    call_command("ensure_superuser")
    assert get_user_model().objects.get(username="staff").check_password("a long chosen passphrase")
    assert not (tmp_path / "admin-credentials").exists()
