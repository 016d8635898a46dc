"""scoring: graded tries and hint costs (fractional points, deductions)

Revision ID: 5c1e7a9b2d40
Revises: 022db8bbe006
Create Date: 2026-12-03 10:12:41.118302

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5c1e7a9b2d40'
down_revision = '022db8bbe006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.alter_column('points', existing_type=sa.Integer(), type_=sa.Float(),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('counted', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('graded', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('deduction', sa.Float(), server_default='0', nullable=False))

    with op.batch_alter_table('exercise_progress', schema=None) as batch_op:
        batch_op.alter_column('points', existing_type=sa.Integer(), type_=sa.Float(),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('deduction', sa.Float(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('exercise_progress', schema=None) as batch_op:
        batch_op.drop_column('deduction')
        batch_op.alter_column('points', existing_type=sa.Float(), type_=sa.Integer(),
                              existing_nullable=False)

    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_column('deduction')
        batch_op.drop_column('graded')
        batch_op.drop_column('counted')
        batch_op.alter_column('points', existing_type=sa.Float(), type_=sa.Integer(),
                              existing_nullable=False)
