module github.com/pgsession/pgsession

go 1.25.0

require (
	github.com/gorilla/securecookie v1.1.2
	github.com/jmoiron/sqlx v1.4.0
	github.com/lib/pq v1.12.3
)
