from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running the exchange: the scrape-time metrics, the staff dashboard and members' stats."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops.metrics import register

        register()
