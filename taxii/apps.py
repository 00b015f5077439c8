from django.apps import AppConfig


class TaxiiConfig(AppConfig):
    """Partner feeds: TAXII 2.1, the MISP feed, and the feed tokens their consumers present."""

    name = "taxii"
    verbose_name = "Partner feeds"
