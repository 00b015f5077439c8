import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from exchange import pgwatch

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

application = get_wsgi_application()
# A request's call to a frozen PostgreSQL answers 503 after this long instead of hanging.
pgwatch.enable(settings.HASHX_DATABASE_TIMEOUT_SECONDS)
