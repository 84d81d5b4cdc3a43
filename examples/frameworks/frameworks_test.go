package frameworks

import (
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
	"github.com/labstack/echo/v4"

	"github.com/pgsession/pgsession/internal/frameworktest"
)

// routers mounts the scenario's application on each framework's router:
// pgsession's middleware around every route (the one line docs/frameworks.md
// gives for each framework), the public routes, and the protected ones in a
// route group behind RequireLogin.
var routers = map[string]func(a *frameworktest.App) http.Handler{
	"servemux": func(a *frameworktest.App) http.Handler {
		mux := http.NewServeMux()
		for _, rt := range a.Public() {
			mux.Handle(rt.Method+" "+rt.Path, rt.Handler)
		}
		for _, rt := range a.Protected() {
			mux.Handle(rt.Method+" "+rt.Path, frameworktest.RequireLogin(rt.Handler))
		}
		return a.Manager.Middleware(mux)
	},
	"chi": func(a *frameworktest.App) http.Handler {
		r := chi.NewRouter()
		r.Use(a.Manager.Middleware)
		for _, rt := range a.Public() {
			r.Method(rt.Method, rt.Path, rt.Handler)
		}
		r.Group(func(r chi.Router) {
			r.Use(frameworktest.RequireLogin)
			for _, rt := range a.Protected() {
				r.Method(rt.Method, rt.Path, rt.Handler)
			}
		})
		return r
	},
	"gorilla-mux": func(a *frameworktest.App) http.Handler {
		r := mux.NewRouter()
		r.Use(a.Manager.Middleware)
		for _, rt := range a.Public() {
			r.Handle(rt.Path, rt.Handler).Methods(rt.Method)
		}
		g := r.PathPrefix("/").Subrouter()
		g.Use(frameworktest.RequireLogin)
		for _, rt := range a.Protected() {
			g.Handle(rt.Path, rt.Handler).Methods(rt.Method)
		}
		return r
	},
	"echo": func(a *frameworktest.App) http.Handler {
		e := echo.New()
		e.HideBanner = true
		e.Use(echo.WrapMiddleware(a.Manager.Middleware))
		for _, rt := range a.Public() {
			e.Add(rt.Method, rt.Path, echo.WrapHandler(rt.Handler))
		}
		g := e.Group("", echo.WrapMiddleware(frameworktest.RequireLogin))
		for _, rt := range a.Protected() {
			g.Add(rt.Method, rt.Path, echo.WrapHandler(rt.Handler))
		}
		return e
	},
}

// TestFrameworks runs the scenario (login with RotateKey, a write read
// back, a streamed response, logout) behind each framework's router, on the
// memory backend and on PostgreSQL.
func TestFrameworks(t *testing.T) {
	for name, router := range routers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			frameworktest.Test(t, router)
		})
	}
}
