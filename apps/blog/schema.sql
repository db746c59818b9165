-- The blog's tables. The app creates them on start-up when they are missing, so a fresh deployment works
-- without a setup step; `python -m framework --app "apps.blog:create_app()" init-db` drops and recreates them.

CREATE TABLE IF NOT EXISTS user (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT UNIQUE NOT NULL,  -- canonical: NFKC, case-folded (auth.canonical_username)
  password TEXT NOT NULL,
  generation INTEGER NOT NULL DEFAULT 0  -- bumped at logout: sessions from before it are logged out
);

CREATE TABLE IF NOT EXISTS post (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  author_id INTEGER NOT NULL,
  created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  title TEXT NOT NULL,
  body TEXT NOT NULL,
  FOREIGN KEY (author_id) REFERENCES user (id)
);
