"""Drop three single-column indexes that another index already leads with: a request's model
((mlmodel, created_at) leads with it, on both tables) and a shadow prediction's request (the
unique (mlrequest, mlmodel) does). 36 bytes less per prediction with one shadow model, and
three fewer index entries per INSERT (README: What scale costs).

Only the indexes go. Letting Django alter the foreign keys (``db_index=False``) would drop and
re-add their constraints, and re-adding one checks every row under a lock that stops every
prediction and feedback until the whole request log has been read. So the model state changes
here, and the database only loses the indexes: on PostgreSQL with ``DROP INDEX CONCURRENTLY``,
which waits for running transactions without blocking reads or writes (hence ``atomic =
False``: it cannot run in a transaction). The names are the ones Django gave them (its names are
a hash of table and column, the same on every database).
"""
import django.db.models.deletion
from django.db import migrations, models

INDEXES = [
    ("endpoints_mlrequest", "mlmodel_id", "endpoints_mlrequest_mlmodel_id_04cfa5a9"),
    ("endpoints_shadowprediction", "mlmodel_id", "endpoints_shadowprediction_mlmodel_id_f757166e"),
    ("endpoints_shadowprediction", "mlrequest_id",
     "endpoints_shadowprediction_mlrequest_id_63f1c793"),
]


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_indexes(apps, schema_editor):
    for _, _, name in INDEXES:
        schema_editor.execute(f"DROP INDEX{_concurrently(schema_editor)} IF EXISTS "
                              f"{schema_editor.quote_name(name)}")


def create_indexes(apps, schema_editor):
    quote = schema_editor.quote_name
    for table, column, name in INDEXES:
        schema_editor.execute(f"CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS "
                              f"{quote(name)} ON {quote(table)} ({quote(column)})")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('endpoints', '0004_artifact_source'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='mlrequest',
                    name='mlmodel',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='requests', to='endpoints.mlmodel'),
                ),
                migrations.AlterField(
                    model_name='shadowprediction',
                    name='mlmodel',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='shadow_predictions', to='endpoints.mlmodel'),
                ),
                migrations.AlterField(
                    model_name='shadowprediction',
                    name='mlrequest',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='shadow_predictions', to='endpoints.mlrequest'),
                ),
            ],
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
