/* The DOM-free page scanner of curation/cc/html_scan.py, in C.
 *
 * scan(markup) -> (images, base_href, lang) with exactly what html_scan.scan_page_python returns:
 * the same tokenizer rules (see that module's docstring), implemented as forward-only scans over
 * the page's bytes. Every read is bounds-checked against the page's length; nothing recurses; each
 * byte is looked at a bounded number of times (the open foreign-content frames are a heap array
 * whose end-tag search only runs when a frame of that name is open, and then removes what it
 * walks over), so any input scans in linear time. Attribute values are decoded here too: UTF-8
 * with Python's "replace" handler, CR LF / CR -> LF, NUL -> U+FFFD, character references with the
 * spec's attribute rule (named references from Python's html.entities.html5, numeric ones with
 * the windows-1252 table for 0x80-0x9F from Python's cp1252 codec).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef unsigned char uchar;

static PyObject *named_references; /* html.entities.html5 */
static Py_ssize_t longest_legacy;  /* the longest reference name valid without ';' */
static Py_UCS4 c1_table[32];       /* numeric references 0x80-0x9F */

/* ---- character classes ---------------------------------------------------------------------- */

static inline int is_ws(uchar c) { return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' '; }
static inline int is_alpha(uchar c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int is_digit(uchar c) { return c >= '0' && c <= '9'; }
static inline int is_alnum(uchar c) { return is_alpha(c) || is_digit(c); }
static inline int is_hex(uchar c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static inline uchar lower(uchar c) { return (c >= 'A' && c <= 'Z') ? (uchar)(c | 0x20) : c; }
/* A tag name ends at whitespace, '/' or '>' (the "name end" the scanner requires after a name). */
static inline int is_name_end(uchar c) { return is_ws(c) || c == '/' || c == '>'; }

/* ---- tag names ------------------------------------------------------------------------------ */

enum {
    T_OTHER = 0,
    T_IMG, T_IMAGE, T_BASE, T_HTML, T_PLAINTEXT, T_TEMPLATE, T_SVG, T_MATH,
    T_SCRIPT, T_STYLE, T_XMP, T_IFRAME, T_NOEMBED, T_NOFRAMES, T_TEXTAREA, T_TITLE,
    T_FOREIGNOBJECT, T_DESC, T_MI, T_MO, T_MN, T_MS, T_MTEXT,
    T_P, T_BR, T_FONT, T_BREAKOUT, /* the other start tags that end foreign content */
    T_COUNT
};

enum {
    F_HTML_START = 1,    /* a start tag the scanner stops at outside foreign content */
    F_FOREIGN_START = 2, /* ... inside foreign content */
    F_BREAKOUT = 4,
    F_RAW = 8,
    F_SVG_POINT = 16,
    F_MATH_POINT = 32,
};

static const unsigned tag_flags[T_COUNT] = {
    [T_IMG] = F_HTML_START | F_FOREIGN_START | F_BREAKOUT,
    [T_IMAGE] = F_HTML_START,
    [T_BASE] = F_HTML_START | F_FOREIGN_START,
    [T_HTML] = F_HTML_START,
    [T_PLAINTEXT] = F_HTML_START,
    [T_TEMPLATE] = F_HTML_START,
    [T_SVG] = F_HTML_START | F_FOREIGN_START,
    [T_MATH] = F_HTML_START | F_FOREIGN_START,
    [T_SCRIPT] = F_HTML_START | F_RAW,
    [T_STYLE] = F_HTML_START | F_RAW,
    [T_XMP] = F_HTML_START | F_RAW,
    [T_IFRAME] = F_HTML_START | F_RAW,
    [T_NOEMBED] = F_HTML_START | F_RAW,
    [T_NOFRAMES] = F_HTML_START | F_RAW,
    [T_TEXTAREA] = F_HTML_START | F_RAW,
    [T_TITLE] = F_HTML_START | F_RAW | F_FOREIGN_START | F_SVG_POINT,
    [T_FOREIGNOBJECT] = F_FOREIGN_START | F_SVG_POINT,
    [T_DESC] = F_FOREIGN_START | F_SVG_POINT,
    [T_MI] = F_FOREIGN_START | F_MATH_POINT,
    [T_MO] = F_FOREIGN_START | F_MATH_POINT,
    [T_MN] = F_FOREIGN_START | F_MATH_POINT,
    [T_MS] = F_FOREIGN_START | F_MATH_POINT,
    [T_MTEXT] = F_FOREIGN_START | F_MATH_POINT,
    [T_P] = F_FOREIGN_START | F_BREAKOUT,
    [T_BR] = F_FOREIGN_START | F_BREAKOUT,
    [T_FONT] = F_FOREIGN_START | F_BREAKOUT,
    [T_BREAKOUT] = F_FOREIGN_START | F_BREAKOUT,
};

typedef struct {
    const char *name;
    int id;
} TagName;

static const TagName tag_names[] = {
    {"img", T_IMG}, {"image", T_IMAGE}, {"base", T_BASE}, {"html", T_HTML},
    {"plaintext", T_PLAINTEXT}, {"template", T_TEMPLATE}, {"svg", T_SVG}, {"math", T_MATH},
    {"script", T_SCRIPT}, {"style", T_STYLE}, {"xmp", T_XMP}, {"iframe", T_IFRAME},
    {"noembed", T_NOEMBED}, {"noframes", T_NOFRAMES}, {"textarea", T_TEXTAREA},
    {"title", T_TITLE}, {"foreignobject", T_FOREIGNOBJECT}, {"desc", T_DESC}, {"mi", T_MI},
    {"mo", T_MO}, {"mn", T_MN}, {"ms", T_MS}, {"mtext", T_MTEXT}, {"p", T_P}, {"br", T_BR},
    {"font", T_FONT},
    /* the rest of the spec's "in foreign content" breakout list */
    {"b", T_BREAKOUT}, {"big", T_BREAKOUT}, {"blockquote", T_BREAKOUT}, {"body", T_BREAKOUT},
    {"center", T_BREAKOUT}, {"code", T_BREAKOUT}, {"dd", T_BREAKOUT}, {"div", T_BREAKOUT},
    {"dl", T_BREAKOUT}, {"dt", T_BREAKOUT}, {"em", T_BREAKOUT}, {"embed", T_BREAKOUT},
    {"h1", T_BREAKOUT}, {"h2", T_BREAKOUT}, {"h3", T_BREAKOUT}, {"h4", T_BREAKOUT},
    {"h5", T_BREAKOUT}, {"h6", T_BREAKOUT}, {"head", T_BREAKOUT}, {"hr", T_BREAKOUT},
    {"i", T_BREAKOUT}, {"li", T_BREAKOUT}, {"listing", T_BREAKOUT}, {"menu", T_BREAKOUT},
    {"meta", T_BREAKOUT}, {"nobr", T_BREAKOUT}, {"ol", T_BREAKOUT}, {"pre", T_BREAKOUT},
    {"ruby", T_BREAKOUT}, {"s", T_BREAKOUT}, {"small", T_BREAKOUT}, {"span", T_BREAKOUT},
    {"strong", T_BREAKOUT}, {"strike", T_BREAKOUT}, {"sub", T_BREAKOUT}, {"sup", T_BREAKOUT},
    {"table", T_BREAKOUT}, {"tt", T_BREAKOUT}, {"u", T_BREAKOUT}, {"ul", T_BREAKOUT},
    {"var", T_BREAKOUT},
};
#define LONGEST_TAG_NAME 13

/* The id of a tag name as written (ASCII case-insensitive; T_OTHER for names we ignore). */
static int tag_id(const uchar *name, Py_ssize_t len)
{
    if (len > LONGEST_TAG_NAME)
        return T_OTHER;
    char folded[LONGEST_TAG_NAME];
    for (Py_ssize_t i = 0; i < len; i++)
        folded[i] = (char)lower(name[i]);
    for (size_t k = 0; k < sizeof(tag_names) / sizeof(tag_names[0]); k++) {
        const char *candidate = tag_names[k].name;
        if (candidate[0] == folded[0] && (Py_ssize_t)strlen(candidate) == len &&
            memcmp(candidate, folded, (size_t)len) == 0)
            return tag_names[k].id;
    }
    return T_OTHER;
}

/* ---- growable arrays ------------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t name_start, name_end, value_start, value_end, end; /* value_start < 0: no value */
} Attr;

typedef struct {
    Attr *items;
    Py_ssize_t size, capacity;
} Attrs;

typedef struct {
    int foreign; /* 1: an <svg>/<math> root, 0: an integration point */
    int id;
} Frame;

typedef struct {
    Frame *items;
    Py_ssize_t size, capacity;
    Py_ssize_t open[T_COUNT]; /* how many frames of each name are open */
} Frames;

static int grow(void **items, Py_ssize_t *capacity, size_t item_size)
{
    Py_ssize_t wanted = *capacity ? *capacity * 2 : 16;
    if (wanted > PY_SSIZE_T_MAX / (Py_ssize_t)item_size) {
        PyErr_NoMemory();
        return -1;
    }
    void *grown = PyMem_Realloc(*items, (size_t)wanted * item_size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = grown;
    *capacity = wanted;
    return 0;
}

static int frames_push(Frames *frames, int foreign, int id)
{
    if (frames->size == frames->capacity &&
        grow((void **)&frames->items, &frames->capacity, sizeof(Frame)) < 0)
        return -1;
    frames->items[frames->size].foreign = foreign;
    frames->items[frames->size].id = id;
    frames->size++;
    frames->open[id]++;
    return 0;
}

static void frames_pop(Frames *frames)
{
    frames->size--;
    frames->open[frames->items[frames->size].id]--;
}

static void frames_pop_foreign(Frames *frames)
{
    while (frames->size && frames->items[frames->size - 1].foreign)
        frames_pop(frames);
}

/* ---- tokenizer pieces ----------------------------------------------------------------------- */

/* The attributes after a tag's name (from `p`) up to the tag's `>`: its index, or -1 when the tag
 * is cut by the end of the page. With `out`, their spans are recorded. */
static Py_ssize_t tag_rest(const uchar *d, Py_ssize_t n, Py_ssize_t p, Attrs *out)
{
    if (out)
        out->size = 0;
    while (p < n) {
        uchar c = d[p];
        if (is_ws(c) || c == '/') {
            p++;
            continue;
        }
        if (c == '>')
            return p;
        Attr attr;
        attr.name_start = p++; /* the first character may be '=' */
        while (p < n && !is_name_end(d[p]) && d[p] != '=')
            p++;
        attr.name_end = p;
        attr.value_start = attr.value_end = -1;
        Py_ssize_t q = p;
        while (q < n && is_ws(d[q]))
            q++;
        if (q < n && d[q] == '=') {
            q++;
            while (q < n && is_ws(d[q]))
                q++;
            if (q < n && (d[q] == '"' || d[q] == '\'')) {
                const uchar *close = memchr(d + q + 1, d[q], (size_t)(n - q - 1));
                if (close == NULL)
                    return -1;
                attr.value_start = q + 1;
                attr.value_end = close - d;
                p = attr.value_end + 1;
            }
            else {
                attr.value_start = q;
                while (q < n && !is_ws(d[q]) && d[q] != '>')
                    q++;
                attr.value_end = p = q;
            }
        }
        attr.end = p;
        if (out) {
            if (out->size == out->capacity &&
                grow((void **)&out->items, &out->capacity, sizeof(Attr)) < 0)
                return -2;
            out->items[out->size++] = attr;
        }
    }
    return -1;
}

/* After `<!--` (at q): the end of the comment. */
static Py_ssize_t comment_end(const uchar *d, Py_ssize_t n, Py_ssize_t q)
{
    if (q < n && d[q] == '>')
        return q + 1;
    if (q + 1 < n && d[q] == '-' && d[q + 1] == '>')
        return q + 2;
    while (q < n) {
        const uchar *dash = memchr(d + q, '-', (size_t)(n - q));
        if (dash == NULL)
            return n;
        Py_ssize_t i = dash - d;
        if (i + 2 < n && d[i + 1] == '-') {
            if (d[i + 2] == '>')
                return i + 3;
            if (d[i + 2] == '!' && i + 3 < n && d[i + 3] == '>')
                return i + 4;
        }
        q = i + 1;
    }
    return n;
}

/* After `<![CDATA[` (at q): the end of the section. */
static Py_ssize_t cdata_end(const uchar *d, Py_ssize_t n, Py_ssize_t q)
{
    while (q < n) {
        const uchar *bracket = memchr(d + q, ']', (size_t)(n - q));
        if (bracket == NULL)
            return n;
        Py_ssize_t i = bracket - d;
        if (i + 2 < n && d[i + 1] == ']' && d[i + 2] == '>')
            return i + 3;
        q = i + 1;
    }
    return n;
}

/* After a bogus comment's `<!`, `<?` or `</` (at q): past its `>`, or the end of the page. */
static Py_ssize_t bogus_end(const uchar *d, Py_ssize_t n, Py_ssize_t q)
{
    if (q >= n)
        return n;
    const uchar *gt = memchr(d + q, '>', (size_t)(n - q));
    return gt ? (gt - d) + 1 : n;
}

/* Whether `</name` (ASCII case-insensitive, `name` lower-case) followed by a name end starts at i. */
static int end_tag_at(const uchar *d, Py_ssize_t n, Py_ssize_t i, const char *name, Py_ssize_t len)
{
    if (i + 2 + len >= n || d[i + 1] != '/')
        return 0;
    for (Py_ssize_t k = 0; k < len; k++)
        if (lower(d[i + 2 + k]) != (uchar)name[k])
            return 0;
    return is_name_end(d[i + 2 + len]);
}

/* Whether `<script` followed by a name end starts at i. */
static int script_start_at(const uchar *d, Py_ssize_t n, Py_ssize_t i)
{
    static const char name[] = "script";
    if (i + 7 >= n)
        return 0;
    for (Py_ssize_t k = 0; k < 6; k++)
        if (lower(d[i + 1 + k]) != (uchar)name[k])
            return 0;
    return is_name_end(d[i + 7]);
}

static inline int arrow_at(const uchar *d, Py_ssize_t n, Py_ssize_t i)
{
    return i + 2 < n && d[i] == '-' && d[i + 1] == '-' && d[i + 2] == '>';
}

/* Where the `</script` that ends script data starting at `pos` begins (n: none), through the
 * script data, escaped and double-escaped states. */
static Py_ssize_t script_end(const uchar *d, Py_ssize_t n, Py_ssize_t pos)
{
    enum { DATA, ESCAPED, DOUBLE } state = DATA;
    while (pos < n) {
        if (state == DATA) {
            const uchar *lt = memchr(d + pos, '<', (size_t)(n - pos));
            if (lt == NULL)
                return n;
            Py_ssize_t i = lt - d;
            if (i + 3 < n && d[i + 1] == '!' && d[i + 2] == '-' && d[i + 3] == '-') {
                state = ESCAPED;
                pos = i + 2; /* `<!-->` returns to data at once */
            }
            else if (end_tag_at(d, n, i, "script", 6))
                return i;
            else
                pos = i + 1;
            continue;
        }
        Py_ssize_t i = pos;
        for (; i < n; i++) {
            if (d[i] == '-' && arrow_at(d, n, i))
                break;
            if (d[i] == '<' &&
                (end_tag_at(d, n, i, "script", 6) || (state == ESCAPED && script_start_at(d, n, i))))
                break;
        }
        if (i >= n)
            return n;
        if (d[i] == '-') {
            state = DATA;
            pos = i + 3;
        }
        else if (state == ESCAPED) {
            if (d[i + 1] == '/')
                return i;
            state = DOUBLE;
            pos = i + 7;
        }
        else {
            state = ESCAPED;
            pos = i + 8;
        }
    }
    return n;
}

/* Where the end tag of raw text `name` starting at `pos` begins (n: none). */
static Py_ssize_t raw_text_end(const uchar *d, Py_ssize_t n, Py_ssize_t pos, int id)
{
    const char *name = NULL;
    for (size_t k = 0; k < sizeof(tag_names) / sizeof(tag_names[0]); k++)
        if (tag_names[k].id == id) {
            name = tag_names[k].name;
            break;
        }
    Py_ssize_t len = (Py_ssize_t)strlen(name);
    while (pos < n) {
        const uchar *lt = memchr(d + pos, '<', (size_t)(n - pos));
        if (lt == NULL)
            return n;
        Py_ssize_t i = lt - d;
        if (end_tag_at(d, n, i, name, len))
            return i;
        pos = i + 1;
    }
    return n;
}

/* ---- states --------------------------------------------------------------------------------- */

enum { MODE_HTML, MODE_POINT, MODE_FOREIGN };

static int is_end_name(int mode, int id, Py_ssize_t template_depth)
{
    switch (mode) {
    case MODE_FOREIGN:
        return id == T_SVG || id == T_MATH || id == T_P || id == T_BR;
    case MODE_POINT:
        return id == T_SVG || id == T_MATH || id == T_TEMPLATE ||
               (tag_flags[id] & (F_SVG_POINT | F_MATH_POINT));
    default:
        return id == T_TEMPLATE && template_depth > 0;
    }
}

typedef struct {
    Py_ssize_t start; /* the '<' */
    Py_ssize_t name_end;
    int id;
    int end_tag;
} Tag;

/* The next tag from `p` that this state stops at; 0 if there is none before the end of the page.
 * Text, comments, bogus comments, CDATA (in foreign content) and every other tag, attributes and
 * quoted values included, are skipped. */
static int next_tag(const uchar *d, Py_ssize_t n, Py_ssize_t p, int mode,
                    Py_ssize_t template_depth, Tag *tag)
{
    unsigned start_flag = mode == MODE_FOREIGN ? F_FOREIGN_START : F_HTML_START;
    while (p < n) {
        const uchar *lt = memchr(d + p, '<', (size_t)(n - p));
        if (lt == NULL)
            return 0;
        p = lt - d;
        if (p + 1 >= n)
            return 0;
        uchar c = d[p + 1];
        if (c == '!') {
            if (p + 3 < n && d[p + 2] == '-' && d[p + 3] == '-')
                p = comment_end(d, n, p + 4);
            else if (mode == MODE_FOREIGN && n - p >= 9 && memcmp(d + p, "<![CDATA[", 9) == 0)
                p = cdata_end(d, n, p + 9);
            else
                p = bogus_end(d, n, p + 2);
            continue;
        }
        if (c == '?') {
            p = bogus_end(d, n, p + 2);
            continue;
        }
        int end_tag = c == '/';
        Py_ssize_t name_start = p + 1 + end_tag;
        if (end_tag && (name_start >= n || !is_alpha(d[name_start]))) {
            p = bogus_end(d, n, name_start);
            continue;
        }
        if (!is_alpha(d[name_start])) {
            p++; /* a '<' that starts nothing */
            continue;
        }
        Py_ssize_t name_end = name_start + 1;
        while (name_end < n && !is_name_end(d[name_end]))
            name_end++;
        if (name_end >= n)
            return 0; /* a tag cut by the end of the page */
        int id = tag_id(d + name_start, name_end - name_start);
        if (end_tag ? is_end_name(mode, id, template_depth) : (tag_flags[id] & start_flag) != 0) {
            tag->start = p;
            tag->name_end = name_end;
            tag->id = id;
            tag->end_tag = end_tag;
            return 1;
        }
        Py_ssize_t gt = tag_rest(d, n, name_end, NULL);
        if (gt < 0)
            return 0;
        p = gt + 1;
    }
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

static int buffer_reserve(Buffer *buffer, Py_ssize_t extra)
{
    if (extra > PY_SSIZE_T_MAX / 2 - buffer->size) {
        PyErr_NoMemory();
        return -1;
    }
    if (buffer->size + extra <= buffer->capacity)
        return 0;
    Py_ssize_t wanted = buffer->capacity ? buffer->capacity : 64;
    while (wanted < buffer->size + extra)
        wanted *= 2;
    char *grown = PyMem_Realloc(buffer->data, (size_t)wanted);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = grown;
    buffer->capacity = wanted;
    return 0;
}

static int buffer_add(Buffer *buffer, const void *bytes, Py_ssize_t len)
{
    if (len == 0)
        return 0;
    if (buffer_reserve(buffer, len) < 0)
        return -1;
    memcpy(buffer->data + buffer->size, bytes, (size_t)len);
    buffer->size += len;
    return 0;
}

static int buffer_add_code_point(Buffer *buffer, Py_UCS4 code)
{
    uchar bytes[4];
    Py_ssize_t len;
    if (code < 0x80) {
        bytes[0] = (uchar)code;
        len = 1;
    }
    else if (code < 0x800) {
        bytes[0] = (uchar)(0xC0 | (code >> 6));
        bytes[1] = (uchar)(0x80 | (code & 0x3F));
        len = 2;
    }
    else if (code < 0x10000) {
        bytes[0] = (uchar)(0xE0 | (code >> 12));
        bytes[1] = (uchar)(0x80 | ((code >> 6) & 0x3F));
        bytes[2] = (uchar)(0x80 | (code & 0x3F));
        len = 3;
    }
    else {
        bytes[0] = (uchar)(0xF0 | (code >> 18));
        bytes[1] = (uchar)(0x80 | ((code >> 12) & 0x3F));
        bytes[2] = (uchar)(0x80 | ((code >> 6) & 0x3F));
        bytes[3] = (uchar)(0x80 | (code & 0x3F));
        len = 4;
    }
    return buffer_add(buffer, bytes, len);
}

/* The expansion of named reference `name` (+ ";" when `semicolon`), or NULL (borrowed; NULL with
 * an exception set on error). */
static PyObject *named_reference(const uchar *name, Py_ssize_t len, int semicolon)
{
    char key[64];
    if (len + 1 > (Py_ssize_t)sizeof(key))
        return NULL;
    memcpy(key, name, (size_t)len);
    if (semicolon)
        key[len++] = ';';
    PyObject *text = PyUnicode_FromStringAndSize(key, len);
    if (text == NULL)
        return NULL;
    PyObject *value = PyDict_GetItemWithError(named_references, text);
    Py_DECREF(text);
    return value;
}

static int buffer_add_text(Buffer *buffer, PyObject *text)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    return utf8 == NULL ? -1 : buffer_add(buffer, utf8, len);
}

/* The character reference at s[i] == '&' in a value of length n: appends what it decodes to and
 * returns the index after it (i + 1 with the '&' copied when none starts there); -1 on error. */
static Py_ssize_t add_reference(Buffer *out, const uchar *s, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t j = i + 1;
    if (j < n && s[j] == '#') {
        int hexadecimal = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
        Py_ssize_t k = j + 1 + hexadecimal;
        if (k < n && (hexadecimal ? is_hex(s[k]) : is_digit(s[k]))) {
            Py_UCS4 number = 0;
            int too_large = 0;
            for (; k < n && (hexadecimal ? is_hex(s[k]) : is_digit(s[k])); k++) {
                unsigned digit = is_digit(s[k]) ? (unsigned)(s[k] - '0') : (unsigned)((s[k] | 0x20) - 'a' + 10);
                if (!too_large) {
                    number = number * (hexadecimal ? 16 : 10) + digit;
                    if (number > 0x10FFFF)
                        too_large = 1;
                }
            }
            if (k < n && s[k] == ';')
                k++;
            Py_UCS4 code;
            if (too_large || number == 0 || (number >= 0xD800 && number <= 0xDFFF))
                code = 0xFFFD;
            else if (number >= 0x80 && number <= 0x9F)
                code = c1_table[number - 0x80];
            else
                code = number;
            return buffer_add_code_point(out, code) < 0 ? -1 : k;
        }
        return buffer_add(out, "&", 1) < 0 ? -1 : i + 1;
    }
    if (!(j < n && is_alpha(s[j])))
        return buffer_add(out, "&", 1) < 0 ? -1 : i + 1;
    Py_ssize_t name_end = j + 1;
    while (name_end < n && is_alnum(s[name_end]))
        name_end++;
    Py_ssize_t len = name_end - j;
    int semicolon = name_end < n && s[name_end] == ';';
    Py_ssize_t match_end = name_end + semicolon;
    if (semicolon) {
        PyObject *value = named_reference(s + j, len, 1);
        if (value != NULL)
            return buffer_add_text(out, value) < 0 ? -1 : match_end;
        if (PyErr_Occurred())
            return -1;
    }
    for (Py_ssize_t length = len < longest_legacy ? len : longest_legacy; length > 1; length--) {
        PyObject *value = named_reference(s + j, length, 0);
        if (value == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        int following; /* -1: nothing follows */
        if (length < len)
            following = s[j + length];
        else if (semicolon)
            following = ';';
        else
            following = match_end < n ? s[match_end] : -1;
        if (following == '=' || (following >= 0 && is_alnum((uchar)following)))
            break; /* stays as written */
        if (buffer_add_text(out, value) < 0 ||
            buffer_add(out, s + j + length, match_end - (j + length)) < 0)
            return -1;
        return match_end;
    }
    return buffer_add(out, s + i, match_end - i) < 0 ? -1 : match_end;
}

static const uchar replacement_utf8[3] = {0xEF, 0xBF, 0xBD};

/* An attribute value's bytes as the tokenizer delivers them (a new str). */
static PyObject *attribute_value(Buffer *buffer, const uchar *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n && s[i] != '&' && s[i] != '\r' && s[i] != 0)
        i++;
    if (i == n)
        return PyUnicode_DecodeUTF8((const char *)s, n, "replace");
    buffer->size = 0;
    if (buffer_add(buffer, s, i) < 0)
        return NULL;
    while (i < n) {
        uchar c = s[i];
        if (c == '\r') {
            if (buffer_add(buffer, "\n", 1) < 0)
                return NULL;
            i += (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
        }
        else if (c == 0) {
            if (buffer_add(buffer, replacement_utf8, 3) < 0)
                return NULL;
            i++;
        }
        else if (c == '&') {
            i = add_reference(buffer, s, n, i);
            if (i < 0)
                return NULL;
        }
        else {
            Py_ssize_t start = i;
            while (i < n && s[i] != '&' && s[i] != '\r' && s[i] != 0)
                i++;
            if (buffer_add(buffer, s + start, i - start) < 0)
                return NULL;
        }
    }
    return PyUnicode_DecodeUTF8(buffer->data, buffer->size, "replace");
}

/* An attribute name: ASCII-lower-cased, NUL -> U+FFFD, UTF-8 with "replace" (a new str). */
static PyObject *attribute_name(Buffer *buffer, const uchar *s, Py_ssize_t n)
{
    buffer->size = 0;
    if (buffer_reserve(buffer, n) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == 0) {
            if (buffer_add(buffer, replacement_utf8, 3) < 0)
                return NULL;
        }
        else {
            if (buffer_reserve(buffer, 1) < 0)
                return NULL;
            buffer->data[buffer->size++] = (char)lower(s[i]);
        }
    }
    return PyUnicode_DecodeUTF8(buffer->data, buffer->size, "replace");
}

static int name_is(const uchar *d, const Attr *attr, const char *name)
{
    Py_ssize_t len = (Py_ssize_t)strlen(name);
    if (attr->name_end - attr->name_start != len)
        return 0;
    for (Py_ssize_t k = 0; k < len; k++)
        if (lower(d[attr->name_start + k]) != (uchar)name[k])
            return 0;
    return 1;
}

/* The first attribute called `name` (lower-case ASCII), or NULL. */
static const Attr *find_attribute(const uchar *d, const Attrs *attrs, const char *name)
{
    for (Py_ssize_t k = 0; k < attrs->size; k++)
        if (name_is(d, &attrs->items[k], name))
            return &attrs->items[k];
    return NULL;
}

/* A value-less attribute's value is None, as selectolax reports it (a new reference). */
static PyObject *value_of(Buffer *buffer, const uchar *d, const Attr *attr)
{
    if (attr->value_start < 0)
        Py_RETURN_NONE;
    return attribute_value(buffer, d + attr->value_start, attr->value_end - attr->value_start);
}

static PyObject *attribute_dict(Buffer *buffer, const uchar *d, const Attrs *attrs)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < attrs->size; k++) {
        const Attr *attr = &attrs->items[k];
        PyObject *name = attribute_name(buffer, d + attr->name_start, attr->name_end - attr->name_start);
        if (name == NULL)
            goto error;
        int seen = PyDict_Contains(dict, name);
        if (seen != 0) {
            Py_DECREF(name);
            if (seen < 0)
                goto error;
            continue; /* the first of duplicate names wins */
        }
        PyObject *value = value_of(buffer, d, attr);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        int failed = PyDict_SetItem(dict, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed < 0)
            goto error;
    }
    return dict;
error:
    Py_DECREF(dict);
    return NULL;
}

/* Whether the tag ends in `/>` with the `/` not part of its last attribute. */
static int self_closing(const uchar *d, Py_ssize_t gt, const Attrs *attrs)
{
    if (d[gt - 1] != '/')
        return 0;
    return attrs->size == 0 || attrs->items[attrs->size - 1].end < gt;
}

/* ---- the scan ------------------------------------------------------------------------------- */

static PyObject *scan(PyObject *module, PyObject *markup)
{
    PyObject *encoded = NULL;
    if (PyBytes_Check(markup)) {
        encoded = markup;
        Py_INCREF(encoded);
    }
    else if (PyUnicode_Check(markup)) {
        encoded = PyUnicode_AsEncodedString(markup, "utf-8", "surrogatepass");
        if (encoded == NULL)
            return NULL;
    }
    else {
        PyErr_Format(PyExc_TypeError, "scan() takes str or bytes, not %.100s", Py_TYPE(markup)->tp_name);
        return NULL;
    }
    const uchar *d = (const uchar *)PyBytes_AS_STRING(encoded);
    Py_ssize_t n = PyBytes_GET_SIZE(encoded);

    PyObject *images = PyList_New(0);
    PyObject *base_href = NULL, *lang = NULL, *result = NULL;
    Attrs attrs = {0};
    Frames frames = {0};
    Buffer buffer = {0};
    int html_seen_lang = 0;
    Py_ssize_t template_depth = 0;
    Py_ssize_t pos = 0;
    if (images == NULL)
        goto done;

    while (pos < n) {
        int foreign = frames.size && frames.items[frames.size - 1].foreign;
        int mode = foreign ? MODE_FOREIGN : frames.size ? MODE_POINT : MODE_HTML;
        Tag tag;
        if (!next_tag(d, n, pos, mode, template_depth, &tag))
            break;
        Py_ssize_t gt = tag_rest(d, n, tag.name_end, &attrs);
        if (gt == -2)
            goto done;
        if (gt < 0)
            break; /* a tag cut by the end of the page is no tag */
        pos = gt + 1;
        int id = tag.id;
        if (tag.end_tag) {
            if (id == T_TEMPLATE) {
                if (template_depth > 0)
                    template_depth--;
            }
            else if (foreign && (id == T_P || id == T_BR))
                frames_pop_foreign(&frames);
            else if (frames.open[id] > 0) { /* </svg>, </math>, an integration point's end */
                while (frames.items[frames.size - 1].id != id)
                    frames_pop(&frames);
                frames_pop(&frames);
            }
            continue;
        }
        if (foreign) {
            if (id == T_BASE)
                goto base;
            if (tag_flags[id] & F_BREAKOUT) {
                if (id == T_FONT && !find_attribute(d, &attrs, "color") &&
                    !find_attribute(d, &attrs, "face") && !find_attribute(d, &attrs, "size"))
                    continue;
                frames_pop_foreign(&frames);
                /* and on as HTML */
            }
            else {
                int root = frames.items[frames.size - 1].id;
                if (self_closing(d, gt, &attrs))
                    continue;
                if (id == T_SVG || id == T_MATH) {
                    if (frames_push(&frames, 1, id) < 0)
                        goto done;
                }
                else if (tag_flags[id] & (root == T_SVG ? F_SVG_POINT : F_MATH_POINT)) {
                    if (frames_push(&frames, 0, id) < 0)
                        goto done;
                }
                continue;
            }
        }
        switch (id) {
        case T_IMG:
        case T_IMAGE:
            if (!template_depth) {
                PyObject *dict = attribute_dict(&buffer, d, &attrs);
                if (dict == NULL)
                    goto done;
                int failed = PyList_Append(images, dict);
                Py_DECREF(dict);
                if (failed < 0)
                    goto done;
            }
            break;
        case T_BASE:
        base:
            if (base_href == NULL && !template_depth) {
                const Attr *href = find_attribute(d, &attrs, "href");
                if (href != NULL && href->value_start >= 0) {
                    PyObject *value = value_of(&buffer, d, href);
                    if (value == NULL)
                        goto done;
                    if (PyUnicode_GET_LENGTH(value) > 0)
                        base_href = value;
                    else
                        Py_DECREF(value);
                }
            }
            break;
        case T_HTML:
            if (!template_depth && !html_seen_lang) {
                const Attr *found = find_attribute(d, &attrs, "lang");
                if (found != NULL) {
                    lang = value_of(&buffer, d, found);
                    if (lang == NULL)
                        goto done;
                    html_seen_lang = 1;
                }
            }
            break;
        case T_PLAINTEXT:
            pos = n; /* the rest of the page is text */
            break;
        case T_TEMPLATE:
            template_depth++;
            break;
        case T_SVG:
        case T_MATH:
            if (!self_closing(d, gt, &attrs) && frames_push(&frames, 1, id) < 0)
                goto done;
            break;
        default:
            if (tag_flags[id] & F_RAW)
                /* the end tag (with any attributes it has) is skipped by the next search */
                pos = id == T_SCRIPT ? script_end(d, n, pos) : raw_text_end(d, n, pos, id);
            break;
        }
    }
    result = Py_BuildValue("(OOO)", images, base_href ? base_href : Py_None, lang ? lang : Py_None);

done:
    Py_DECREF(encoded);
    Py_XDECREF(images);
    Py_XDECREF(base_href);
    Py_XDECREF(lang);
    PyMem_Free(attrs.items);
    PyMem_Free(frames.items);
    PyMem_Free(buffer.data);
    return result;
}

/* ---- module --------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(markup: str | bytes) -> (images, base_href, lang): the <img> attribute dicts, the first "
     "non-empty <base href> and the root's lang, as html_scan.scan_page_python finds them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_html_scan",
    "The page scanner of curation.cc.html_scan, in C.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__html_scan(void)
{
    PyObject *entities = PyImport_ImportModule("html.entities");
    if (entities == NULL)
        return NULL;
    named_references = PyObject_GetAttrString(entities, "html5");
    Py_DECREF(entities);
    if (named_references == NULL)
        return NULL;
    if (!PyDict_Check(named_references)) {
        PyErr_SetString(PyExc_TypeError, "html.entities.html5 is not a dict");
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t iterator = 0;
    longest_legacy = 0;
    while (PyDict_Next(named_references, &iterator, &key, &value)) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(key);
        if (len > 0 && PyUnicode_READ_CHAR(key, len - 1) != ';' && len > longest_legacy)
            longest_legacy = len;
    }
    for (int code = 0x80; code < 0xA0; code++) {
        char byte = (char)code;
        PyObject *text = PyUnicode_Decode(&byte, 1, "cp1252", "strict");
        if (text == NULL) {
            PyErr_Clear();
            c1_table[code - 0x80] = (Py_UCS4)code;
        }
        else {
            c1_table[code - 0x80] = PyUnicode_READ_CHAR(text, 0);
            Py_DECREF(text);
        }
    }
    return PyModule_Create(&module_def);
}
