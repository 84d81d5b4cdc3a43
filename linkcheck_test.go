package pgsession_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestDocLinks checks that every relative link of README.md and docs/*.md
// names a file or directory of the repository, and that every #anchor
// names a heading of the Markdown file it points into (by GitHub's slug of
// the heading) or an <a id> or <a name> there. Links with a scheme (https:,
// mailto:) are not followed. So a moved document or a renamed heading
// fails here, in CI, instead of at a reader's click.
func TestDocLinks(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{"README.md"}, files...)
	for _, problem := range checkLinks(files) {
		t.Error(problem)
	}
}

// TestDocLinksCatchesBreakage feeds checkLinks broken file links and
// anchors (one in a link whose text wraps) beside good ones, so that
// TestDocLinks cannot pass by finding no links at all.
func TestDocLinksCatchesBreakage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("docs/b.md", "# B\n\n## Key renewal, and requests in flight\n\n## `Stats.Rotations` (0.3)\n\n## Twice\n\n## Twice\n\n<a id=\"custom\"></a>\n")
	write("pkg/schema.sql", "")
	a := write("a.md", strings.Join([]string{
		"# A",
		"[ok](docs/b.md) [ok](docs/b.md#key-renewal-and-requests-in-flight) [ok](docs/b.md#statsrotations-03)",
		"[ok](docs/b.md#twice-1) [ok](docs/b.md#custom) [ok](#a) [ok](pkg/schema.sql) [ok](pkg) [ok](https://example.com/x#y)",
		"![ok](pkg/schema.sql) `[not a link](missing.md)`",
		"```",
		"[not a link](missing.md)",
		"```",
		"[file](testdata/schema.sql) [anchor](docs/b.md#key-renewal) [self](#nowhere) [dup](docs/b.md#twice-2)",
		"a [wrapped", "link](docs/wrapped.md)",
		"[ref]: docs/missing.md",
	}, "\n"))
	got := checkLinks([]string{a})
	want := []string{"testdata/schema.sql", "docs/b.md#key-renewal", "#nowhere", "docs/b.md#twice-2", "docs/wrapped.md", "docs/missing.md"}
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], "("+w+")") {
			t.Errorf("problem %d: %q, want one about %s", i+1, got[i], w)
		}
	}
}

var (
	// mdLink matches an inline link or image, [text](target) or
	// [text](target "title"), once code spans are removed; the text may
	// span lines.
	mdLink = regexp.MustCompile(`!?\[[^\]\[]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// mdRefDef matches a link reference definition, [label]: target, on
	// a line of its own.
	mdRefDef = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?`)
	// mdHeading matches an ATX heading.
	mdHeading = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$`)
	// htmlAnchor matches an explicit anchor, <a id="x"> or <a name="x">.
	htmlAnchor = regexp.MustCompile(`<a\s[^>]*\b(?:id|name)="([^"]+)"`)
	// scheme matches a link with a scheme (https:, mailto:), not checked.
	scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// checkLinks returns a line per broken relative link or anchor in files,
// in order: "file:line: [text](target): what is wrong".
func checkLinks(files []string) []string {
	var problems []string
	anchors := map[string]map[string]bool{} // Markdown file (clean path) → its anchors
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := anchors[path]; ok {
			return a, nil
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		a := mdAnchors(string(text))
		anchors[path] = a
		return a, nil
	}
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		// Links are found in the whole text, not line by line, since a
		// link's text may wrap; a target never does.
		body := strings.Join(mdLines(string(text)), "\n")
		lineOf := func(offset int) int { return strings.Count(body[:offset], "\n") + 1 }
		for _, m := range mdLink.FindAllStringSubmatchIndex(body, -1) {
			target := body[m[2]:m[3]]
			if problem := checkLink(file, target, anchorsOf); problem != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: (%s): %s", file, lineOf(m[0]), target, problem))
			}
		}
		for _, m := range mdRefDef.FindAllStringSubmatchIndex(body, -1) {
			target := body[m[2]:m[3]]
			if problem := checkLink(file, target, anchorsOf); problem != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: (%s): %s", file, lineOf(m[0]), target, problem))
			}
		}
	}
	return problems
}

// checkLink returns what is wrong with the link target in file, or "".
func checkLink(file, target string, anchorsOf func(string) (map[string]bool, error)) string {
	if target == "" {
		return "empty link"
	}
	if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
		return ""
	}
	path, anchor, _ := strings.Cut(target, "#")
	path, err := url.PathUnescape(path)
	if err != nil {
		return err.Error()
	}
	dest := file
	if path != "" {
		if filepath.IsAbs(path) || strings.HasPrefix(path, "/") {
			return "absolute path: GitHub resolves it against the site, not the repository; write it relative to " + filepath.Dir(file)
		}
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
		if _, err := os.Stat(dest); err != nil {
			return "no such file or directory"
		}
	}
	if anchor == "" || !strings.EqualFold(filepath.Ext(dest), ".md") {
		return ""
	}
	a, err := anchorsOf(filepath.Clean(dest))
	if err != nil {
		return err.Error()
	}
	if !a[anchor] {
		return "no heading with that anchor in " + filepath.ToSlash(dest)
	}
	return ""
}

// mdLines returns text's lines with fenced code blocks blanked and code
// spans removed, so that neither yields links nor headings; line numbers
// stay those of the file.
func mdLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" \t") == "" {
				fence = ""
			}
			lines[i] = ""
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			for _, c := range trimmed[3:] {
				if c != rune(fence[0]) {
					break
				}
				fence += fence[:1]
			}
			lines[i] = ""
			continue
		}
		lines[i] = withoutCodeSpans(line)
	}
	return lines
}

// withoutCodeSpans returns line with each code span (one or more backticks)
// replaced by its text with link syntax defused, so that a heading keeps
// its words and a link shown as code is not checked.
func withoutCodeSpans(line string) string {
	var b strings.Builder
	for {
		start := strings.Index(line, "`")
		if start < 0 {
			b.WriteString(line)
			return b.String()
		}
		n := len(line[start:]) - len(strings.TrimLeft(line[start:], "`"))
		ticks := line[start : start+n]
		rest := line[start+n:]
		end := -1
		for off := 0; ; {
			i := strings.Index(rest[off:], ticks)
			if i < 0 {
				break
			}
			i += off
			if i+n < len(rest) && rest[i+n] == '`' { // a longer run: not the closer
				off = i + n + len(rest[i+n:]) - len(strings.TrimLeft(rest[i+n:], "`"))
				continue
			}
			end = i
			break
		}
		if end < 0 { // no closer: literal backticks
			b.WriteString(line[:start+n])
			line = rest
			continue
		}
		b.WriteString(line[:start])
		b.WriteString(strings.NewReplacer("[", "", "]", "", "(", "", ")", "").Replace(rest[:end]))
		line = rest[end+n:]
	}
}

// mdAnchors returns the anchors of a Markdown text: GitHub's slug of each
// heading (a repeated slug gets -1, -2, ...) and each <a id> or <a name>.
func mdAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range mdLines(text) {
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		m := mdHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := githubSlug(m[1])
		if n := seen[slug]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

// mdInlineLink matches an inline link, whose text alone is shown.
var mdInlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)

// githubSlug returns the anchor GitHub gives a heading of the text h (code
// spans already reduced to their text): the shown text lower-cased, with
// every character but letters, digits, '-', '_' and spaces dropped, and
// spaces turned into '-'.
func githubSlug(h string) string {
	h = mdInlineLink.ReplaceAllString(h, "$1")
	h = regexp.MustCompile(`<[^>]*>`).ReplaceAllString(h, "")
	h = strings.ReplaceAll(h, "*", "")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
