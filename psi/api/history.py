"""The history of any object, as a read-only action on its viewset."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response


class HistoryEntrySerializer(serializers.Serializer):
    history_id = serializers.IntegerField()
    history_date = serializers.DateTimeField()
    history_type = serializers.CharField(help_text="+ created, ~ changed, - deleted")
    history_user = serializers.CharField(allow_null=True)
    history_change_reason = serializers.CharField(allow_null=True)
    changes = serializers.DictField(help_text="field: [old, new]")


def history_entries(obj, *, hidden_fields: frozenset[str] = frozenset()) -> list[dict]:
    """Each historical version, newest first, with the fields it changed (old and new
    values). Every tracked field is compared: simple-history's ``diff_against`` leaves
    out non-editable fields, and those matter most (a case's status, a signature)."""
    records = list(
        obj.history.select_related("history_user").order_by("history_date", "pk")
    )
    entries, previous = [], None
    for record in records:
        changes = {}
        if previous is not None:
            for field in record.tracked_fields:
                old = getattr(previous, field.attname)
                new = getattr(record, field.attname)
                if old == new:
                    continue
                if field.name in hidden_fields:
                    changes[field.name] = ["(hidden)", "(hidden)"]
                else:
                    changes[field.name] = [str(old), str(new)]
        user = record.history_user
        entries.append(
            {
                "history_id": record.history_id,
                "history_date": record.history_date,
                "history_type": record.history_type,
                "history_user": user.get_username() if user else None,
                "history_change_reason": record.history_change_reason,
                "changes": changes,
            }
        )
        previous = record
    return entries[::-1]


class HistoryMixin:
    """Adds ``GET …/{id}/history/``. Fields listed in ``history_hidden_fields`` (e.g.
    encrypted identity) show that they changed, never their values."""

    history_hidden_fields: frozenset[str] = frozenset()

    # filters=False: the list's query filters do not apply to one object's history.
    @extend_schema(
        summary="The object's history: each version with the fields it changed",
        responses=HistoryEntrySerializer(many=True),
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, *args, **kwargs):
        obj = self.get_object()
        entries = history_entries(obj, hidden_fields=self.history_hidden_fields)
        return Response(HistoryEntrySerializer(entries, many=True).data)
