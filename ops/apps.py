from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running the exchange: the scrape-time metrics, the staff dashboard and members' stats."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Imported once the apps are: the admin site, and models the gauges read.
        from django.contrib import admin

        from ops.metrics import register

        register()
        # The admin's home page links the dashboard.
        admin.site.index_template = "ops/admin_index.html"
