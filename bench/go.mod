module github.com/pgsession/pgsession/bench

go 1.25.0

replace github.com/pgsession/pgsession => ../

require github.com/gorilla/securecookie v1.1.2 // indirect

require (
	github.com/alexedwards/scs/postgresstore v0.0.0-20251002162104-209de6e426de
	github.com/alexedwards/scs/redisstore v0.0.0-20251002162104-209de6e426de
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/gomodule/redigo v1.9.3
	github.com/jmoiron/sqlx v1.4.0
	github.com/lib/pq v1.12.3
	github.com/pgsession/pgsession v0.0.0-00010101000000-000000000000
)
