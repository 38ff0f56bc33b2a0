from rest_framework import serializers

from apps.webhooks.models import Subscriber


class SubscriberSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True, required=False, min_length=16, max_length=128,
        help_text="Signs every delivery; made for you when omitted, and shown once, in the answer "
                  "to the POST that creates the subscriber.")

    class Meta:
        model = Subscriber
        fields = ["id", "endpoint", "url", "active", "secret", "created_by", "created_at"]
        read_only_fields = ["id", "created_by", "created_at"]


    def validate_endpoint(self, endpoint):
        if self.instance is not None and endpoint != self.instance.endpoint:
            raise serializers.ValidationError("a subscriber stays with its endpoint; create "
                                              "another for this one")
        return endpoint


class SubscriberCreatedSerializer(SubscriberSerializer):
    secret = serializers.CharField(read_only=True)
