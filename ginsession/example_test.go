package ginsession_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/gin-gonic/gin"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/ginsession"
)

func Example() {
	m, err := pgsession.New(pgsession.Config{
		Backend:  pgsession.NewMemoryBackend(), // pgsession.NewPostgresBackend(db) in production
		HashKeys: [][]byte{[]byte("a secret of 32 bytes or more, from your secret store")},
		Cookie:   pgsession.CookieConfig{Insecure: true}, // httptest serves plain HTTP; never in production
	})
	if err != nil {
		log.Fatal(err)
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(ginsession.Middleware(m))
	r.POST("/login", func(c *gin.Context) {
		ctx := c.Request.Context() // the session is in the request's context
		if err := pgsession.RotateKey(ctx); err != nil {
			c.AbortWithError(http.StatusInternalServerError, err)
			return
		}
		if err := pgsession.FromContext(ctx).Set("user", "ada"); err != nil {
			c.AbortWithError(http.StatusInternalServerError, err)
			return
		}
		c.String(http.StatusOK, "welcome ada")
	})
	r.GET("/me", func(c *gin.Context) {
		var user string
		if ok, err := pgsession.FromContext(c.Request.Context()).Get("user", &user); err != nil || !ok {
			c.String(http.StatusUnauthorized, "log in first")
			return
		}
		c.String(http.StatusOK, "hello "+user)
	})

	srv := httptest.NewServer(r)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/login", "", nil)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cookies := resp.Cookies()
	fmt.Printf("login: %d %s, cookie %s set: %t\n", resp.StatusCode, body, m.CookieName(), len(cookies) == 1 && cookies[0].Name == m.CookieName())

	req, _ := http.NewRequest("GET", srv.URL+"/me", nil)
	req.AddCookie(cookies[0])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("me: %d %s\n", resp.StatusCode, body)
	// Output:
	// login: 200 welcome ada, cookie session-key set: true
	// me: 200 hello ada
}
