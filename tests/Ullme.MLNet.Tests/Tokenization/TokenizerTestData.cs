using System.Text;
using System.Text.Json.Nodes;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>Texts that exercise every tokenizer stage, plus ~2,000 real lines from the shared data sets.</summary>
public static class TokenizerTestData
{
    /// <summary>Hand-picked hard cases: scripts, emoji sequences, code, whitespace, special-token strings.</summary>
    public static readonly string[] Varied =
    [
        "",
        " ",
        "   ",
        "Hello world",
        "Hello, world! How are you doing today?",
        " leading space",
        "trailing space ",
        "  two leading and two trailing  ",
        "multiple     spaces    inside",
        "tabs\tand\ttabs\t\tdouble",
        "line one\nline two\n\nline four\n",
        "windows\r\nline\r\nendings\r\n",
        "\n\n\nstarts with newlines",
        "I'm sure they'll say it's fine, we've seen it, you'd agree, I'd've.",
        "DON'T SHOUT. It'S A 'quoted' word",
        "Numbers: 0 7 42 123 4567 89012 3.14159 -2.5e10 1,000,000 $19.99 50%",
        "Phone +1 (555) 123-4567, date 2024-03-15, time 23:59:59.",
        "café naïve résumé coöperate Zoë façade piñata Ångström Æsir Øre ß straße",
        "Crème brûlée à la mode, über-cool, señor, São Paulo, Kraków, İstanbul, ǅ",
        "e\u0301 decomposed accent and a\u030A ring",
        "中文测试：我爱自然语言处理。今天天气很好！",
        "日本語のテキスト、ひらがなとカタカナ。東京は大きい都市です。",
        "한국어 텍스트입니다. 안녕하세요, 반갑습니다!",
        "العربية: مرحبا بالعالم، كيف حالك؟",
        "हिन्दी: नमस्ते दुनिया, आप कैसे हैं?",
        "Русский текст: Привет, мир! Ёлка и ЁЖ.",
        "Ελληνικά: Γειά σου Κόσμε, ΣΟΦΟΣ σοφός",
        "ไทย ภาษาไทย สวัสดีครับ",
        "עברית: שלום עולם",
        "Emoji 😀😃😄 and 👍🏽 skin tone and ❤️ heart",
        "Family 👨‍👩‍👧‍👦 and rainbow flag 🏳️‍🌈 and flags 🇺🇸🇫🇷🇯🇵",
        "😀Hello🎉world🚀",
        "Newer emoji 🥰🤩🫠🥹 and 🧑‍💻",
        "Math 𝐀𝐁𝐂 𝑥² ∑∫√∞ ≠ ≤ ≥ ± × ÷ and digits 𝟎𝟏𝟐",
        "Rare CJK 𠀀𠀁 𪚥 and Gothic 𐌰𐌱",
        "def f(x):\n\treturn x ** 2  # square\n\nclass A:\n    def __init__(self):\n        self.v = [1, 2, 3]\n",
        "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\r\n",
        "if (a && b || !c) { x = y >= z ? p : q; } // comment",
        "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
        "SELECT * FROM users WHERE id = 42 AND name LIKE '%smith%';",
        "snake_case_name and CamelCaseName and kebab-case-name and __dunder__",
        "Symbols: $ + < = > ^ ` | ~ @ # % & * ( ) [ ] { } \\ / ? ! ; : , . - _ ' \"",
        "https://example.com/path?query=1&x=y#frag user@example.org",
        "Special <|endoftext|> inside <|im_start|>user text<|im_end|> end",
        "<|endoftext|>",
        "<s> starts with bos and ends with eos </s>",
        "Hello <s> world</s>",
        "[CLS] bert markers [SEP] and [MASK] and [UNK] [PAD]",
        "a<s>b</s>c",
        "<unk> <0x41> raw byte token text",
        "Null\u0000char and replacement \uFFFD and control \u0007 bell and zero\u200Bwidth and bidi\u200F mark",
        "Soft\u00ADhyphen, no-break\u00A0space, ideographic\u3000space, em\u2003space, line\u2028sep",
        "Mixed: English中文日本語한국어Русский123😀",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
        "ALLCAPS WORDS AND lowercase words And Title Case",
        "..., !!! ??? --- *** ___ ===",
        "    indented code\n        more indented\n\ttab indented",
        "I ♥ NY ☃ ☂ ✓ ✗ → ← ↑ ↓ ™ © ®",
        "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and half-width ｶﾀｶﾅ",
        "ﬁ ligature ﬂ and Ⅻ roman numeral and ½ ¾ fractions",
        "x" + new string(' ', 20) + "y",
        "end with newline\n",
        "the quick brown fox jumps over the lazy dog",
    ];

    private static string[]? s_real;

    /// <summary>About 2,000 real texts: STS-B sentences, SICK sentences, Banking77 queries, SciFact abstracts.</summary>
    public static string[] Real => s_real ??= LoadReal();

    private static string[] LoadReal()
    {
        var texts = new List<string>();
        // STS-B: tab-separated, fields 5 and 6 are the sentences.
        var sts = File.ReadAllLines(Assets.Path("data", "stsbenchmark", "sts-train.csv"));
        for (int i = 0; i < sts.Length && texts.Count < 600; i += 19)
        {
            var f = sts[i].Split('\t');
            if (f.Length >= 7) { texts.Add(f[5]); texts.Add(f[6]); }
        }
        var sick = File.ReadAllLines(Assets.Path("data", "sick", "SICK_train.txt"));
        for (int i = 1; i < sick.Length && texts.Count < 1000; i += 22)
        {
            var f = sick[i].Split('\t');
            texts.Add(f[1]);
            texts.Add(f[2]);
        }
        var banking = ReadCsv(Assets.Path("data", "banking77", "train.csv"));
        for (int i = 1; i < banking.Count && texts.Count < 1600; i += 16) texts.Add(banking[i][0]);
        var scifact = ReadCsv(Assets.Path("data", "scifact", "corpus_train.csv"));
        for (int i = 1; i < scifact.Count && texts.Count < 2000; i += 12) texts.Add(scifact[i][2]);
        return texts.ToArray();
    }

    /// <summary>Minimal RFC 4180 reader (quoted fields may hold commas, quotes and newlines).</summary>
    public static List<string[]> ReadCsv(string path)
    {
        string all = File.ReadAllText(path);
        var rows = new List<string[]>();
        var row = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < all.Length; i++)
        {
            char c = all[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < all.Length && all[i + 1] == '"') { field.Append('"'); i++; }
                    else quoted = false;
                }
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\n' || c == '\r')
            {
                if (c == '\r' && i + 1 < all.Length && all[i + 1] == '\n') i++;
                row.Add(field.ToString());
                field.Clear();
                rows.Add(row.ToArray());
                row.Clear();
            }
            else field.Append(c);
        }
        if (field.Length > 0 || row.Count > 0) { row.Add(field.ToString()); rows.Add(row.ToArray()); }
        return rows;
    }

    public static IEnumerable<string> All => Varied.Concat(Real);

    /// <summary>
    /// A copy of a tokenizer.json without its post-processor: Tokenizers.DotNet always encodes with special tokens,
    /// so this copy gives HF's ids for add_special_tokens=False.
    /// </summary>
    public static string WithoutPostProcessor(string tokenizerJson, string tempDir)
    {
        var node = JsonNode.Parse(File.ReadAllText(tokenizerJson))!;
        node["post_processor"] = null;
        string path = System.IO.Path.Combine(tempDir, "no-post-" + Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, node.ToJsonString());
        return path;
    }
}

/// <summary>A temp folder deleted at dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ullme-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
