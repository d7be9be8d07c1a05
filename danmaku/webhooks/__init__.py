"""Webhooks: room events delivered to the platform's URLs as signed JSON (see
``service.WebhookService`` and ``rules.webhooks``)."""

from danmaku.webhooks.service import WebhookService

__all__ = ["WebhookService"]
