-- The tables config.example.json reads, with a few rows to try it on:
--   mariadb < config.example.sql
-- (as root; then create the sockmapd user as the README says).

CREATE DATABASE IF NOT EXISTS mail CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
USE mail;

-- Postfix asks a socketmap for the full address only ("alice@example.net"),
-- never for the domain, "@domain" or "user@" it tries in its own tables: the
-- maps below whose rows are domains have "search" set in
-- config.example.json, so sockmapd tries those keys itself.

-- "recipient" (virtual_alias_maps): an address -> where its mail goes;
-- "@example.com" catches every other address of example.com ("search":
-- "virtual": user@domain, then @domain).
CREATE TABLE IF NOT EXISTS aliases (
  alias VARCHAR(255) NOT NULL,
  deliver_to VARCHAR(255) NOT NULL,
  KEY (alias)
);
INSERT INTO aliases (alias, deliver_to) VALUES
  ('postmaster@example.org', 'root@example.net'),
  ('team@example.org', 'alice@example.net'),
  ('team@example.org', 'bob@example.net'),
  ('@example.com', 'root@example.net');

-- "virtual" (virtual_alias_maps, too): the same with an "active" flag,
-- keys folded to lower case and "user+tag@" tried as "user@".
CREATE TABLE IF NOT EXISTS alias (
  address VARCHAR(255) NOT NULL,
  goto VARCHAR(255) NOT NULL,
  active TINYINT NOT NULL DEFAULT 1,
  KEY (address)
);
INSERT INTO alias (address, goto, active) VALUES
  ('info@example.org', 'alice@example.net', 1),
  ('old@example.org', 'nobody@example.net', 0);

-- "transport" (transport_maps): a domain -> its next hop, as smtp:[host]
-- ("search": "transport": user@domain, domain, then ".parent" rows for
-- subdomains).
CREATE TABLE IF NOT EXISTS domains (
  domain VARCHAR(255) NOT NULL PRIMARY KEY,
  nexthop VARCHAR(255) NOT NULL
);
INSERT INTO domains (domain, nexthop) VALUES
  ('example.net', 'mx.example.net');

-- "sender" (check_sender_access): an address or domain -> an access(5)
-- action, and the reason the client is told ("search": "access":
-- user@domain, domain, its parent domains, user@; the address row wins, so
-- friend@bad.example gets in while the rest of bad.example and its
-- subdomains do not).
CREATE TABLE IF NOT EXISTS sender_access (
  sender VARCHAR(255) NOT NULL PRIMARY KEY,
  action VARCHAR(64) NOT NULL,
  reason VARCHAR(255) NULL
);
INSERT INTO sender_access (sender, action, reason) VALUES
  ('spammer@bad.example', 'REJECT', 'spam source'),
  ('friend@bad.example', 'OK', NULL),
  ('bad.example', 'REJECT', 'domain blacklisted');
