"""Member organisations (companies and peer exchanges) and their signing keys."""

from django.db import models


class Organisation(models.Model):
    """A member company or a peer exchange. Only active organisations authenticate."""

    class Kind(models.TextChoices):
        MEMBER = "member", "Member company"
        PEER = "peer", "Peer exchange"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MEMBER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    contact_email = models.EmailField(blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def audit_owner_org_id(self) -> int:
        """Events about an organisation are visible to that organisation."""
        return self.pk

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE
