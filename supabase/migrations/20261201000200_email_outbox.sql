-- =============================================================================================
-- Email: templates, the message outbox, preferences and suppressions
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- A message is a row of private.email_messages, enqueued by private.enqueue_email in the same
-- transaction as the change that causes it (both commit or neither), once per idempotency key.
-- The email-dispatch edge function claims due messages (FOR UPDATE SKIP LOCKED, under a lease),
-- renders them (react-email, functions/_shared/emails) and sends them through Resend (the local
-- mailbox without RESEND_API_KEY), passing the message id as Resend's idempotency key, so a crash
-- between sending and recording never sends twice. Temporary failures retry with exponential
-- backoff and jitter (honouring Retry-After); permanent ones (a 4xx) fail at once; after
-- max_attempts a message is dead; an operator requeues failed and dead ones.
--
-- Required mail (auth, security, the billing the law or the contract requires) always goes;
-- everything else respects the recipient's preferences (public.email_preferences) and the
-- suppression list (hard bounces, complaints, unsubscribes) at claim time, when it is marked
-- suppressed instead of sent. Messages are private: they hold tokens and personal data.

create type public.email_category as enum ('auth', 'account', 'billing', 'usage_alerts', 'product_news', 'marketing');
comment on type public.email_category is
  'What a mail is about; a user may turn off any category except for the mail within it that is required.';

create type private.email_status as enum ('queued', 'sending', 'sent', 'delivered', 'bounced', 'complained', 'failed', 'dead', 'suppressed');
comment on type private.email_status is
  'queued (due at next_attempt_at), sending (claimed), sent, delivered, bounced, complained, failed (permanently), dead (out of attempts), suppressed (not sent: preference or suppression list).';

insert into private.settings (key, value, description) values
  ('site_url', '"http://127.0.0.1:3000"', 'The frontend''s address; links in mail (accepting an invitation, topping up) point there.'),
  ('email_max_attempts', '8', 'Sends of one message before it is dead.'),
  ('sent_email_retention', '"30 days"', 'How long a sent (or otherwise finished) message is kept before the cleanup job deletes it.');

insert into private.error_codes (code, class, meaning) values
  ('unknown_template', 'not_found', 'No email template has this name.'),
  ('invalid_recipient', 'invalid_input', 'The recipient is not an email address.'),
  ('invalid_props', 'invalid_input', 'Template props are a JSON object of at most 64 KB.'),
  ('message_not_found', 'not_found', 'No email message has this id.');

-- ---------------------------------------------------------------------------------------------
-- Templates: what SQL needs to know of each (the rendering lives in functions/_shared/emails,
-- whose registry a test keeps equal to these rows)
-- ---------------------------------------------------------------------------------------------
create table private.email_templates (
  name text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
  category public.email_category not null,
  required boolean not null,
  description text not null
);
comment on table private.email_templates is 'Every email template: its category and whether it is required (sent whatever the preferences).';
comment on column private.email_templates.name is 'The template''s name, as functions/_shared/emails registers it.';
comment on column private.email_templates.category is 'What the mail is about (the preference it follows).';
comment on column private.email_templates.required is 'Required mail always goes: auth, security, billing the law or the contract requires.';
comment on column private.email_templates.description is 'When it is sent.';
alter table private.email_templates enable row level security;
grant select on private.email_templates to service_role;

insert into private.email_templates (name, category, required, description) values
  ('organization_invitation', 'account', false, 'An invitation to join an organization (member.invited).'),
  ('welcome', 'account', false, 'A welcome after signing up or joining.'),
  ('data_export_ready', 'account', true, 'A data export asked for (GDPR access or a purge) is ready to download.'),
  ('inactivity_warning', 'account', true, 'An inactive organization will be purged unless someone signs in.'),
  ('data_purge_scheduled', 'account', true, 'An organization''s data will be purged on a date.'),
  ('data_purge_completed', 'account', true, 'An organization''s data was purged.'),
  ('low_credits', 'usage_alerts', false, 'A credit pool fell below its low threshold (credits.low).'),
  ('credits_depleted', 'usage_alerts', false, 'A credit pool reached zero (credits.depleted).'),
  ('credit_topup_receipt', 'billing', true, 'The receipt of a credit purchase.'),
  ('payment_failed', 'billing', true, 'A payment failed; the payment method needs updating.'),
  ('payment_reminder', 'billing', true, 'An amount is due soon.'),
  ('account_overdue', 'billing', true, 'An amount is overdue.'),
  ('auth_confirm_signup', 'auth', true, 'Confirm a sign-up (Supabase Auth).'),
  ('auth_magic_link', 'auth', true, 'A magic link or one-time code to sign in (Supabase Auth).'),
  ('auth_recovery', 'auth', true, 'Reset a password (Supabase Auth).'),
  ('auth_email_change', 'auth', true, 'Confirm a change of email address (Supabase Auth).'),
  ('auth_invite', 'auth', true, 'An invitation to the project (Supabase Auth''s invite).');

-- ---------------------------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------------------------
create table private.email_messages (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid,
  recipient text not null check (recipient = lower(recipient) and private.is_email(recipient)),
  user_id uuid references auth.users (id) on delete set null,
  template text not null references private.email_templates (name),
  props jsonb not null check (jsonb_typeof(props) = 'object'),
  idempotency_key text not null unique check (char_length(idempotency_key) between 1 and 255),
  status private.email_status not null default 'queued',
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  claimed_until timestamptz,
  last_error text check (char_length(last_error) <= 2000),
  provider text,
  provider_message_id text unique,
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  delivered_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table private.email_messages is 'The email outbox: every message, its delivery state and what the provider said.';
comment on column private.email_messages.id is 'The message; also the provider''s idempotency key.';
comment on column private.email_messages.organization_id is 'The organization it is about, if any (no foreign key: mail outlives its subject until the cleanup).';
comment on column private.email_messages.recipient is 'The address it goes to, lower-case.';
comment on column private.email_messages.user_id is 'The recipient''s user, when the address belongs to one (their preferences apply).';
comment on column private.email_messages.template is 'Which template renders it.';
comment on column private.email_messages.props is 'The template''s props.';
comment on column private.email_messages.idempotency_key is 'Enqueuing again with this key returns the same message.';
comment on column private.email_messages.status is 'queued, sending, sent, delivered, bounced, complained, failed, dead or suppressed.';
comment on column private.email_messages.attempts is 'How many times a dispatcher claimed it.';
comment on column private.email_messages.next_attempt_at is 'Not claimable before this time (retry backoff).';
comment on column private.email_messages.claimed_until is 'A dispatcher''s lease while sending; after it, another may take the message over.';
comment on column private.email_messages.last_error is 'The last failure.';
comment on column private.email_messages.provider is 'Who sent it: resend or mailbox.';
comment on column private.email_messages.provider_message_id is 'The provider''s id of the message, which its webhooks name.';
comment on column private.email_messages.created_at is 'When it was enqueued.';
comment on column private.email_messages.sent_at is 'When the provider accepted it.';
comment on column private.email_messages.delivered_at is 'When the provider reported it delivered.';
comment on column private.email_messages.updated_at is 'When it last changed.';
alter table private.email_messages enable row level security;
-- Operators read it; changes go through the functions below.
grant select on private.email_messages to service_role;
create index email_messages_due_idx on private.email_messages (next_attempt_at) where status in ('queued', 'sending');
create index email_messages_organization_id_idx on private.email_messages (organization_id, created_at);
create index email_messages_user_id_idx on private.email_messages (user_id);
create index email_messages_template_idx on private.email_messages (template);
create index email_messages_finished_idx on private.email_messages (created_at)
  where status not in ('queued', 'sending');

create trigger email_messages_set_updated_at
before update on private.email_messages
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Preferences and suppressions
-- ---------------------------------------------------------------------------------------------
create table public.email_preferences (
  user_id uuid not null references auth.users (id) on delete cascade,
  category public.email_category not null,
  subscribed boolean not null,
  updated_at timestamptz not null default now(),
  primary key (user_id, category)
);
comment on table public.email_preferences is 'A user''s choice per mail category; no row means subscribed. Required mail goes regardless.';
comment on column public.email_preferences.user_id is 'The user.';
comment on column public.email_preferences.category is 'The category of mail.';
comment on column public.email_preferences.subscribed is 'Whether they want mail of this category that is not required.';
comment on column public.email_preferences.updated_at is 'When they last chose.';
grant select, insert, delete, update (subscribed) on public.email_preferences to authenticated;
grant select, insert, update, delete on public.email_preferences to service_role;
alter table public.email_preferences enable row level security;
create policy "Users can read their own mail preferences"
on public.email_preferences for select to authenticated using (user_id = (select auth.uid()));
create policy "Users can add their own mail preferences"
on public.email_preferences for insert to authenticated with check (user_id = (select auth.uid()));
create policy "Users can change their own mail preferences"
on public.email_preferences for update to authenticated
using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy "Users can remove their own mail preferences"
on public.email_preferences for delete to authenticated using (user_id = (select auth.uid()));

create trigger email_preferences_set_updated_at
before update on public.email_preferences
for each row execute function private.set_updated_at();

create type private.suppression_reason as enum ('hard_bounce', 'complaint', 'unsubscribed');
comment on type private.suppression_reason is 'Why an address gets no more non-required mail.';

create table private.email_suppressions (
  email text not null check (email = lower(email)),
  category public.email_category,
  reason private.suppression_reason not null,
  created_at timestamptz not null default now(),
  unique nulls not distinct (email, category)
);
comment on table private.email_suppressions is 'Addresses that get no more non-required mail: of one category, or (category null) of any.';
comment on column private.email_suppressions.email is 'The address, lower-case.';
comment on column private.email_suppressions.category is 'The category suppressed; null for all non-required mail.';
comment on column private.email_suppressions.reason is 'hard_bounce, complaint or unsubscribed.';
comment on column private.email_suppressions.created_at is 'When.';
alter table private.email_suppressions enable row level security;
grant select, delete on private.email_suppressions to service_role;

-- Replays of signed webhooks (Resend's delivery events, and later Stripe's) are refused by their id.
create table private.webhook_receipts (
  source text not null check (source ~ '^[a-z][a-z0-9_]*$'),
  receipt_id text not null check (char_length(receipt_id) between 1 and 255),
  received_at timestamptz not null default now(),
  primary key (source, receipt_id)
);
comment on table private.webhook_receipts is 'Ids of the signed webhook deliveries received, so a replay changes nothing.';
comment on column private.webhook_receipts.source is 'Who sent it: resend, stripe.';
comment on column private.webhook_receipts.receipt_id is 'The delivery''s id (svix-id, the event id).';
comment on column private.webhook_receipts.received_at is 'When it first arrived.';
alter table private.webhook_receipts enable row level security;
grant select on private.webhook_receipts to service_role;
create index webhook_receipts_received_at_idx on private.webhook_receipts (received_at);
