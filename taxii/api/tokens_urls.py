from django.urls import path

from taxii.api import tokens

urlpatterns = [
    path("feed-tokens", tokens.FeedTokenListView.as_view(), name="feed-tokens"),
    path("feed-tokens/<str:token_id>", tokens.FeedTokenDetailView.as_view(), name="feed-token"),
]
