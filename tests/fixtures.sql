-- Fixture tables for the sockmapd integration tests (loaded as root by
-- tests/lib/harness.py MariaDB.load_fixtures; the user sockmapd gets SELECT on
-- dbmail, mail and other).  Re-loading drops and recreates everything.
--
-- Collations, chosen per table so both match styles can be tested:
--   utf8mb4_bin         exact, case-sensitive match: dbmail_aliases.alias,
--                       sender_access.sender, transport.domain, mail.alias.address,
--                       mail.domains.domain, other.things.name
--   utf8mb4_general_ci  case-insensitive: recipients.address (a lookup in any
--                       case finds 'Bob.Smith@Example.org' and the existence map
--                       answers the key as stored: "OK Bob.Smith@Example.org")
--   VARBINARY           byte-exact, no padding rules: awkward.k
-- Tables that must return several rows per key have no primary key on it.

SET NAMES utf8mb4;
SET sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION';

DROP DATABASE IF EXISTS dbmail;
DROP DATABASE IF EXISTS mail;
DROP DATABASE IF EXISTS other;

CREATE DATABASE dbmail CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE DATABASE mail CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE DATABASE other CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;

USE dbmail;

-- Value map "recipient": alias -> deliver_to, several rows per alias allowed
-- (the id primary key keeps row order = insertion order through KEY(alias)).
-- Expected answers (values joined with ',' in row order, NULL and '' skipped):
--   postmaster@example.org -> OK root@example.org
--   team@example.org       -> OK alice@example.org,bob@example.org,carol@example.org
--   nullonly@example.org   -> NOTFOUND   (only a NULL value)
--   emptyonly@example.org  -> NOTFOUND   (only an empty value)
--   Case@Example.org       -> OK case-sensitive ; case@example.org -> NOTFOUND
CREATE TABLE dbmail_aliases (
  id INT AUTO_INCREMENT PRIMARY KEY,
  alias VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  deliver_to VARCHAR(255) NULL,
  KEY (alias)
) ENGINE=InnoDB;
INSERT INTO dbmail_aliases (alias, deliver_to) VALUES
  ('postmaster@example.org', 'root@example.org'),
  ('team@example.org', 'alice@example.org'),
  ('team@example.org', NULL),
  ('team@example.org', 'bob@example.org'),
  ('team@example.org', ''),
  ('team@example.org', 'carol@example.org'),
  ('nullonly@example.org', NULL),
  ('emptyonly@example.org', ''),
  ('Case@Example.org', 'case-sensitive'),
  ('abuse@example.org', 'postmaster@example.org');

-- Existence map "exists": no value column, the reply is the key as stored.
CREATE TABLE recipients (
  address VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY
) ENGINE=InnoDB;
INSERT INTO recipients (address) VALUES
  ('alice@example.org'),
  ('Bob.Smith@Example.org'),
  ('carol@example.org');

-- Value + reason map "sender": action, and " <reason>" if reason is non-empty.
--   spammer@bad.example  -> OK REJECT spam source
--   discard@bad.example  -> OK DISCARD silently dropped
--   friend@good.example  -> OK OK            (reason NULL)
--   partner@good.example -> OK DUNNO         (reason '')
CREATE TABLE sender_access (
  sender VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  action VARCHAR(64) NOT NULL,
  reason VARCHAR(255) NULL
) ENGINE=InnoDB;
INSERT INTO sender_access (sender, action, reason) VALUES
  ('spammer@bad.example', 'REJECT', 'spam source'),
  ('discard@bad.example', 'DISCARD', 'silently dropped'),
  ('friend@good.example', 'OK', NULL),
  ('partner@good.example', 'DUNNO', '');

-- Value map "transport".
CREATE TABLE transport (
  domain VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  nexthop VARCHAR(255) NOT NULL
) ENGINE=InnoDB;
INSERT INTO transport (domain, nexthop) VALUES
  ('example.org', 'smtp:[mx.example.org]'),
  ('example.net', 'lmtp:unix:private/dovecot-lmtp'),
  ('relay.example', 'relay:[192.0.2.1]:587');

-- Value map "awkward": byte-exact keys that would break string-pasted SQL or
-- naive framing.  Each value names its key.  Expected:
--   it's                      -> OK single-quote
--   say "hi"                  -> OK double-quote
--   back\slash  (one \)       -> OK backslash
--   with space inside         -> OK spaces
--   a,b,c                     -> OK commas
--   tab<TAB>here              -> OK tab
--   nul<NUL>byte              -> OK nul-byte
--   müller@exämple.org (UTF-8)-> OK utf8 müller
--   x' OR '1'='1              -> OK injection-literal   (only this one row)
--   100%_sure                 -> OK percent-underscore  (100xxsure -> NOTFOUND)
--   3:abc,                    -> OK netstring-like
--   'trail ' (trailing space) -> OK trailing-space ; 'trail' -> NOTFOUND
--   max-ok   -> OK + 99997 x's : the reply payload is exactly 100000 bytes
--   max-over -> 99998 x's      : 100001 bytes, over the limit -> PERM
--   big      -> 200000 x's     : PERM
CREATE TABLE awkward (
  k VARBINARY(1024) NOT NULL PRIMARY KEY,
  v MEDIUMTEXT CHARACTER SET utf8mb4 NULL
) ENGINE=InnoDB;
INSERT INTO awkward (k, v) VALUES
  ('it''s', 'single-quote'),
  ('say "hi"', 'double-quote'),
  (CONCAT('back', CHAR(92), 'slash'), 'backslash'),
  ('with space inside', 'spaces'),
  ('a,b,c', 'commas'),
  (CONCAT('tab', CHAR(9), 'here'), 'tab'),
  (X'6E756C0062797465', 'nul-byte'),
  (CONVERT('müller@exämple.org' USING utf8mb4), 'utf8 müller'),
  ('x'' OR ''1''=''1', 'injection-literal'),
  ('100%_sure', 'percent-underscore'),
  ('3:abc,', 'netstring-like'),
  ('trail ', 'trailing-space'),
  ('max-ok', REPEAT('x', 99997)),
  ('max-over', REPEAT('x', 99998)),
  ('big', REPEAT('x', 200000));

-- Non-string value column (for a value map on an integer column).
CREATE TABLE quota (
  address VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  bytes BIGINT NOT NULL
) ENGINE=InnoDB;
INSERT INTO quota (address, bytes) VALUES
  ('alice@example.org', 1073741824),
  ('bob@example.org', 0);

USE mail;

-- For query-template maps, e.g.
--   SELECT goto FROM alias WHERE address = %s AND active = 1
-- with lowercase / strip_extension "+" / domain ["example.org"].
CREATE TABLE alias (
  address VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  goto TEXT NOT NULL,
  active TINYINT NOT NULL DEFAULT 1,
  KEY (address)
) ENGINE=InnoDB;
INSERT INTO alias (address, goto, active) VALUES
  ('info@example.org', 'alice@example.org', 1),
  ('sales@example.org', 'bob@example.org', 1),
  ('sales@example.org', 'carol@example.org', 1),
  ('old@example.org', 'nobody@example.org', 0),
  ('alice@example.org', 'alice@mailbox.example.org', 1),
  ('info@example.com', 'other-domain@example.com', 1);

-- Table map with result_format "smtp:[%s]".
CREATE TABLE domains (
  domain VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  nexthop VARCHAR(255) NOT NULL
) ENGINE=InnoDB;
INSERT INTO domains (domain, nexthop) VALUES
  ('example.org', 'mx.example.org'),
  ('example.com', 'mx.example.com');

-- For %u / %d templates:
--   SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d AND active = 1
CREATE TABLE mailbox (
  local_part VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  domain VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  maildir VARCHAR(255) NOT NULL,
  active TINYINT NOT NULL DEFAULT 1,
  PRIMARY KEY (local_part, domain)
) ENGINE=InnoDB;
INSERT INTO mailbox (local_part, domain, maildir, active) VALUES
  ('alice', 'example.org', 'example.org/alice/', 1),
  ('bob', 'example.com', 'example.com/bob/', 1),
  ('gone', 'example.org', 'example.org/gone/', 0);

USE other;

-- A second schema: one connection per schema named in postmaps ("othermap").
CREATE TABLE things (
  name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  val VARCHAR(255) NOT NULL
) ENGINE=InnoDB;
INSERT INTO things (name, val) VALUES
  ('ping', 'pong'),
  ('alpha', 'beta');

-- ---- query templates, key handling, result formats (tests/bb_mariadb.py, marker features) ----
USE mail;

-- Virtual aliases for lowercase / strip_extension "+" / domain ["example.org"]:
--   list+vip@example.org   -> OK vip-desk@example.org    (the full key exists)
--   list@example.org       -> OK list-members@example.org
--   list+other@example.org -> NOTFOUND as is; with strip_extension "+" the
--                             reduced key list@example.org answers
--   MixedCase@example.org  stored in mixed case (utf8mb4_bin): found as typed,
--                          not with lowercase
--   @example.org           -> OK catchall@example.org (a Postfix catch-all key)
--   list@example.com       -> OK other-list@example.com  (outside the domain list)
CREATE TABLE virtual_alias (
  address VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  goto VARCHAR(255) NOT NULL,
  KEY (address)
) ENGINE=InnoDB;
INSERT INTO virtual_alias (address, goto) VALUES
  ('list+vip@example.org', 'vip-desk@example.org'),
  ('list@example.org', 'list-members@example.org'),
  ('MixedCase@example.org', 'mixed@example.org'),
  ('@example.org', 'catchall@example.org'),
  ('list@example.com', 'other-list@example.com');

-- Keys that try to break out of a query template.  address is the whole key,
-- local_part / domain its parts split at the last '@'; label names the row.
-- Byte-exact (VARBINARY).  A lookup must find exactly its own row:
--   it's@example.org                -> single-quote
--   say "hi"@example.org            -> double-quote
--   back\slash@example.org (one \)  -> backslash
--   nul<NUL>byte@example.org        -> nul-byte ; the row 'nul' catches a key cut at the NUL
--   %s%d@example.org                -> percent-escapes
--   100%@example.org                -> percent
--   what?@example.org               -> question-mark
--   ??@?                            -> question-marks
--   a@b@example.org                 -> two-ats (local part a@b)
--   x' OR '1'='1@example.org        -> injection-literal
--   it's@ex'ample.org               -> quote-in-domain
CREATE TABLE hostile (
  address VARBINARY(512) NOT NULL,
  local_part VARBINARY(512) NOT NULL,
  domain VARBINARY(255) NOT NULL,
  label VARCHAR(64) NOT NULL,
  KEY (address),
  KEY (local_part, domain)
) ENGINE=InnoDB;
INSERT INTO hostile (address, local_part, domain, label) VALUES
  ('it''s@example.org', 'it''s', 'example.org', 'single-quote'),
  ('say "hi"@example.org', 'say "hi"', 'example.org', 'double-quote'),
  (CONCAT('back', CHAR(92), 'slash@example.org'), CONCAT('back', CHAR(92), 'slash'), 'example.org', 'backslash'),
  (X'6E756C0062797465406578616D706C652E6F7267', X'6E756C0062797465', 'example.org', 'nul-byte'),
  ('nul', 'nul', 'example.org', 'truncated-at-nul'),
  ('%s%d@example.org', '%s%d', 'example.org', 'percent-escapes'),
  ('100%@example.org', '100%', 'example.org', 'percent'),
  ('what?@example.org', 'what?', 'example.org', 'question-mark'),
  ('??@?', '??', '?', 'question-marks'),
  ('a@b@example.org', 'a@b', 'example.org', 'two-ats'),
  ('x'' OR ''1''=''1@example.org', 'x'' OR ''1''=''1', 'example.org', 'injection-literal'),
  ('it''s@ex''ample.org', 'it''s', 'ex''ample.org', 'quote-in-domain');

-- A domain-wide blacklist: '@domain' rows block a whole domain for the query
-- map of bb_mariadb's features cases, 'domain' rows for the README's map with "search":
-- "access"; address rows one sender; the address row wins over its domain's.
--   anyone@spam.example -> OK REJECT domain blacklisted
--   good@spam.example   -> OK OK
--   bad@example.net     -> OK REJECT sender blacklisted
CREATE TABLE blacklist (
  pattern VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY,
  action VARCHAR(64) NOT NULL,
  reason VARCHAR(255) NULL
) ENGINE=InnoDB;
INSERT INTO blacklist (pattern, action, reason) VALUES
  ('@spam.example', 'REJECT', 'domain blacklisted'),
  ('spam.example', 'REJECT', 'domain blacklisted'),
  ('good@spam.example', 'OK', NULL),
  ('bad@example.net', 'REJECT', 'sender blacklisted');

-- ---- search orders: Postfix's table search done by sockmapd (tests/bb_mariadb.py, marker search) ----
USE mail;

-- An access(5) table: addresses, domains (bare and ".domain"), "user@",
-- host names and networks.  With "search": "access" (parent domains
-- without the dot, Postfix's default):
--   spammer@bad.example    -> OK REJECT spam source       (the address row)
--   friend@bad.example     -> OK OK                       (wins over bad.example)
--   other@bad.example      -> OK REJECT domain blacklisted
--   x@mail.bad.example     -> OK REJECT domain blacklisted (parent domain)
--   abuse@anywhere.example -> OK OK abuse desk             ("abuse@")
--   x@sub.dotted.example   -> OK REJECT dotted itself; with the ".parent" style: OK REJECT subdomains only
--   x@dotted.example       -> OK REJECT dotted itself      (either style)
--   client.bad.example     -> OK REJECT domain blacklisted (a host name)
--   192.0.2.55             -> OK REJECT network 192.0.2
--   2001:db8:1::7          -> OK REJECT network 2001:db8:1 (after 2001:db8:1:)
-- The 'boom.invalid' row makes the "failing" query map fail on that step
-- (a REGEXP that cannot compile); 'invalid' is what a fall-through to a
-- shorter key would answer.
CREATE TABLE access_rules (
  k VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  action VARCHAR(64) NOT NULL,
  reason VARCHAR(255) NULL
) ENGINE=InnoDB;
INSERT INTO access_rules (k, action, reason) VALUES
  ('spammer@bad.example', 'REJECT', 'spam source'),
  ('friend@bad.example', 'OK', NULL),
  ('bad.example', 'REJECT', 'domain blacklisted'),
  ('dotted.example', 'REJECT', 'dotted itself'),
  ('.dotted.example', 'REJECT', 'subdomains only'),
  ('abuse@', 'OK', 'abuse desk'),
  ('192.0.2', 'REJECT', 'network 192.0.2'),
  ('2001:db8:1', 'REJECT', 'network 2001:db8:1'),
  ('boom.invalid', 'REJECT', 'reached boom'),
  ('invalid', 'OK', 'fell through to a shorter key');

-- A transport(5) table: an address, a domain, ".domain" for its
-- subdomains, and the "*" wildcard.
CREATE TABLE transport_rules (
  k VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  nexthop VARCHAR(255) NOT NULL
) ENGINE=InnoDB;
INSERT INTO transport_rules (k, nexthop) VALUES
  ('special@example.net', 'lmtp:unix:private/special'),
  ('example.net', 'smtp:[mx.example.net]'),
  ('.example.net', 'smtp:[sub.example.net]'),
  ('*', 'smtp:[fallback.example]');
