"""sessions revocable (users.session_version), login failures by device token, and the
join code throttle (join_failures)

Revision ID: 7d2f4a9c1e63
Revises: 5c1e7a9b2d40
Create Date: 2026-12-07 04:35:09.545844

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7d2f4a9c1e63'
down_revision = '5c1e7a9b2d40'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('join_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_join_failures_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_join_failures'))
    )
    with op.batch_alter_table('join_failures', schema=None) as batch_op:
        batch_op.create_index('ix_join_failures_address', ['address', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_join_failures_at'), ['at'], unique=False)
        batch_op.create_index('ix_join_failures_user', ['user_id', 'at'], unique=False)

    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_login_failures_address', ['address', 'at'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))



def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')

    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_address')
        batch_op.drop_column('device')

    with op.batch_alter_table('join_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_join_failures_user')
        batch_op.drop_index(batch_op.f('ix_join_failures_at'))
        batch_op.drop_index('ix_join_failures_address')

    op.drop_table('join_failures')
