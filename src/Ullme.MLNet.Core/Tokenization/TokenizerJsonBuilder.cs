using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Ullme.MLNet.Tokenization;

/// <summary>Builds a <see cref="HuggingFaceTokenizer"/> from HF's <c>tokenizer.json</c> (the serialised Rust pipeline).</summary>
internal static class TokenizerJsonBuilder
{
    public static HuggingFaceTokenizer Build(string file, TokenizerConfig config)
    {
        using (var doc = IO.ModelFileGuard.ParseJson(file, IO.ModelFileGuard.TokenizerFileMaxBytes, maxDepth: 256, allowTrailingCommas: false))
        {
            try
            {
                return BuildCore(doc.RootElement, file, config);
            }
            catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException)
            {
                throw new UllmeException($"'{file}' is not a valid tokenizer.json: {e.Message}", e);
            }
        }
    }

    private static HuggingFaceTokenizer BuildCore(JsonElement root, string file, TokenizerConfig config)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var modelEl) || modelEl.ValueKind != JsonValueKind.Object)
            throw new UllmeException($"'{file}' is not a valid tokenizer.json: it has no \"model\" object.");

        var normalizer = Opt(root, "normalizer") is { } n ? ParseNormalizer(n, file) : null;
        if (normalizer?.NeedsUnicodeNormalization == true) HfNormalizer.EnsureUnicodeNormalizationWorks(file);
        var preTokenizer = Opt(root, "pre_tokenizer") is { } p ? ParsePreTokenizer(p, file) : null;
        var (model, kind) = ParseModel(modelEl, file);
        var decoder = Opt(root, "decoder") is { } d ? ParseDecoder(d, file) : null;

        var added = new List<AddedToken>();
        if (Opt(root, "added_tokens") is { } list)
        {
            if (list.ValueKind != JsonValueKind.Array) throw new UllmeException($"'{file}': \"added_tokens\" must be an array.");
            foreach (var t in list.EnumerateArray())
            {
                if (!t.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id))
                    throw new UllmeException($"'{file}': an added token has no integer \"id\".");
                added.Add(ReadAddedToken(t, id, file));
            }
        }
        // transformers adds tokenizer_config.json's added tokens that tokenizer.json lacks.
        foreach (var t in config.AddedTokensDecoder)
            if (!added.Any(a => a.Content == t.Content)) added.Add(t);
        added = AssignIds(added, model);

        int? Id(string? token) => token is null ? null : added.FirstOrDefault(a => a.Content == token)?.Id ?? model.TokenToId(token);

        var prefix = new List<int>();
        var suffix = new List<int>();
        if (Opt(root, "post_processor") is { } post) ParsePostProcessor(post, file, prefix, suffix, Id);
        if (TokenizerLoader.IsLlamaLike(config.TokenizerClass))
        {
            // LlamaTokenizerFast / GemmaTokenizerFast rebuild the template from add_bos_token / add_eos_token.
            prefix.Clear();
            suffix.Clear();
            if ((config.AddBosToken ?? true) && Id(config.BosToken) is int bos) prefix.Add(bos);
            if ((config.AddEosToken ?? false) && Id(config.EosToken) is int eos) suffix.Add(eos);
        }
        string? unkToken = config.UnkToken ?? (Opt(modelEl, "unk_token") is { ValueKind: JsonValueKind.String } u ? u.GetString() : null);
        return new HuggingFaceTokenizer(kind + " (tokenizer.json)", file, added, normalizer,
            preTokenizer is null ? [] : [preTokenizer], model, decoder, prefix, suffix,
            Id(config.BosToken), Id(config.EosToken), Id(config.PadToken), Id(unkToken), config.ModelMaxLength);
    }

    /// <summary>
    /// HF ignores the ids written in tokenizer.json and re-adds the tokens: a token in the model vocabulary takes that
    /// id, any other the next free id after the model vocabulary (for files HF wrote, this gives the written ids).
    /// </summary>
    private static List<AddedToken> AssignIds(List<AddedToken> tokens, ITokenModel model)
    {
        var byContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        var byId = new Dictionary<int, AddedToken>();
        var special = new HashSet<string>(StringComparer.Ordinal);
        int nextId = model.VocabularyCount;
        foreach (var token in tokens)
        {
            if (token.Content.Length == 0) continue;
            int id = byContent.TryGetValue(token.Content, out var existing) ? existing.Id : model.TokenToId(token.Content) ?? nextId++;
            if (token.Special) special.Add(token.Content);
            var assigned = token with { Id = id };
            byContent[token.Content] = assigned;
            byId[id] = assigned;
        }
        return byId.Values.Select(t => special.Contains(t.Content) ? t with { Special = true } : t).OrderBy(t => t.Id).ToList();
    }

    public static AddedToken ReadAddedToken(JsonElement t, int id, string file)
    {
        if (!t.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
            throw new UllmeException($"'{file}': added token {id} has no string \"content\".");
        bool special = Flag(t, "special", false);
        return new AddedToken(id, c.GetString()!, special, Flag(t, "normalized", !special), Flag(t, "lstrip", false),
            Flag(t, "rstrip", false), Flag(t, "single_word", false));
    }

    public static Dictionary<string, int> ReadVocab(JsonElement vocab, string file)
    {
        if (vocab.ValueKind != JsonValueKind.Object) throw new UllmeException($"'{file}': the vocabulary must be a JSON object of token → id.");
        var dict = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocab.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0) throw new UllmeException($"'{file}': vocabulary token '{p.Name}' has no valid id.");
            dict[p.Name] = id;
        }
        return dict;
    }

    private static (ITokenModel Model, string Kind) ParseModel(JsonElement m, string file)
    {
        string? type = Opt(m, "type")?.GetString();
        type ??= m.TryGetProperty("merges", out _) ? "BPE" : m.TryGetProperty("max_input_chars_per_word", out _) ? "WordPiece" : null;
        switch (type)
        {
            case "BPE":
            {
                var vocab = ReadVocab(Required(m, "vocab", file), file);
                var merges = new List<(string, string)>();
                var mergesEl = Required(m, "merges", file);
                if (mergesEl.ValueKind != JsonValueKind.Array) throw new UllmeException($"'{file}': model.merges must be an array.");
                foreach (var e in mergesEl.EnumerateArray())
                {
                    if (e.ValueKind == JsonValueKind.String)
                    {
                        string s = e.GetString()!;
                        int space = s.IndexOf(' ');
                        if (space < 0 || s.IndexOf(' ', space + 1) >= 0)
                            throw new UllmeException($"'{file}': merge '{s}' is not two tokens separated by one space.");
                        merges.Add((s[..space], s[(space + 1)..]));
                    }
                    else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2
                             && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
                        merges.Add((e[0].GetString()!, e[1].GetString()!));
                    else throw new UllmeException($"'{file}': a merge must be \"a b\" or [\"a\", \"b\"].");
                }
                bool byteFallback = Flag(m, "byte_fallback", false);
                var model = new BpeModel(vocab, merges, Opt(m, "unk_token")?.GetString(), Flag(m, "fuse_unk", false), byteFallback,
                    Flag(m, "ignore_merges", false), Opt(m, "continuing_subword_prefix")?.GetString(),
                    Opt(m, "end_of_word_suffix")?.GetString(), file);
                bool byteLevel = vocab.ContainsKey("\u0120") && !byteFallback; // 'Ġ' = byte-level space
                return (model, byteLevel ? "byte-level BPE" : byteFallback ? "SentencePiece-style BPE" : "BPE");
            }
            case "WordPiece":
            {
                var vocab = ReadVocab(Required(m, "vocab", file), file);
                var model = new WordPieceModel(vocab, Opt(m, "unk_token")?.GetString() ?? "[UNK]",
                    Opt(m, "continuing_subword_prefix")?.GetString() ?? "##",
                    Opt(m, "max_input_chars_per_word") is { } mx && mx.TryGetInt32(out int max) ? max : 100, file);
                return (model, "WordPiece");
            }
            default:
                throw new UllmeException($"'{file}': tokenizer model type '{type ?? "(none)"}' is not supported (BPE and WordPiece are).");
        }
    }

    private static HfNormalizer ParseNormalizer(JsonElement n, string file)
    {
        string type = TypeOf(n, "normalizer", file);
        return type switch
        {
            "Sequence" => new SequenceNormalizer(Required(n, "normalizers", file).EnumerateArray().Select(x => ParseNormalizer(x, file)).ToList()),
            "NFC" => new UnicodeFormNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeFormNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeFormNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeFormNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Prepend" => new PrependNormalizer(Required(n, "prepend", file).GetString()!),
            "Replace" => ParseReplace(n, file, (lit, re, content) => new ReplaceNormalizer(lit, re, content)),
            "Strip" => new StripNormalizer(Flag(n, "strip_left", true), Flag(n, "strip_right", true)),
            "StripAccents" => new StripAccentsNormalizer(),
            "BertNormalizer" => new BertNormalizer(Flag(n, "clean_text", true), Flag(n, "handle_chinese_chars", true),
                Opt(n, "strip_accents") is { } sa && sa.ValueKind is JsonValueKind.True or JsonValueKind.False ? sa.GetBoolean() : null,
                Flag(n, "lowercase", true)),
            _ => throw new UllmeException($"'{file}': normalizer type '{type}' is not supported."),
        };
    }

    private static PreTokenizerStep ParsePreTokenizer(JsonElement p, string file)
    {
        string type = TypeOf(p, "pre_tokenizer", file);
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(Required(p, "pretokenizers", file).EnumerateArray().Select(x => ParsePreTokenizer(x, file)).ToList());
            case "Split":
            {
                var (literal, regex) = Pattern(Required(p, "pattern", file), file);
                return new RegexSplitPreTokenizer(MakeRegex(regex ?? Regex.Escape(literal!), file), Behavior(p, "behavior", SplitBehavior.Removed, file),
                    Flag(p, "invert", false));
            }
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Flag(p, "add_prefix_space", true), Flag(p, "use_regex", true));
            case "Metaspace":
                return new MetaspacePreTokenizer(Replacement(p), PrependScheme(p), Flag(p, "split", true));
            case "BertPreTokenizer":
                return new BertPreTokenizer();
            case "Whitespace":
                return new RegexSplitPreTokenizer(MakeRegex(@"[\p{L}\p{M}\p{Nd}\p{Pc}\p{Nl}\u200C\u200D]+|[^\p{L}\p{M}\p{Nd}\p{Pc}\p{Nl}\u200C\u200D\s]+", file),
                    SplitBehavior.Removed, invert: true);
            case "WhitespaceSplit":
                return new CharSplitPreTokenizer(UnicodeClasses.IsWhiteSpace, SplitBehavior.Removed);
            case "Digits":
                return new CharSplitPreTokenizer(UnicodeClasses.IsNumeric,
                    Flag(p, "individual_digits", false) ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
            case "Punctuation":
                return new CharSplitPreTokenizer(UnicodeClasses.IsBertPunctuation, Behavior(p, "behavior", SplitBehavior.Isolated, file));
            case "CharDelimiterSplit":
            {
                string d = Required(p, "delimiter", file).GetString()!;
                int cp = char.ConvertToUtf32(d, 0);
                return new CharSplitPreTokenizer(c => c == cp, SplitBehavior.Removed);
            }
            default:
                throw new UllmeException($"'{file}': pre_tokenizer type '{type}' is not supported.");
        }
    }

    private static TokenDecoder ParseDecoder(JsonElement d, string file)
    {
        string type = TypeOf(d, "decoder", file);
        return type switch
        {
            "Sequence" => new SequenceDecoder(Required(d, "decoders", file).EnumerateArray().Select(x => ParseDecoder(x, file)).ToList()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => new MetaspaceDecoder(Replacement(d), PrependScheme(d) != "never"),
            "Replace" => ParseReplace(d, file, (lit, re, content) => new ReplaceDecoder(lit, re, content)),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(Required(d, "content", file).GetString()![0], Int(d, "start", 0), Int(d, "stop", 0)),
            "WordPiece" => new WordPieceDecoder(Opt(d, "prefix")?.GetString() ?? "##", Flag(d, "cleanup", true)),
            "BPEDecoder" => new BpeSuffixDecoder(Opt(d, "suffix")?.GetString() ?? "</w>"),
            _ => throw new UllmeException($"'{file}': decoder type '{type}' is not supported."),
        };
    }

    /// <summary>The special ids a post-processor puts before and after a single sequence.</summary>
    private static void ParsePostProcessor(JsonElement p, string file, List<int> prefix, List<int> suffix, Func<string?, int?> id)
    {
        string type = TypeOf(p, "post_processor", file);
        switch (type)
        {
            case "Sequence":
                foreach (var inner in Required(p, "processors", file).EnumerateArray()) ParsePostProcessor(inner, file, prefix, suffix, id);
                break;
            case "ByteLevel":
                break;
            case "BertProcessing":
            case "RobertaProcessing":
                prefix.Add(SpecialPair(Required(p, "cls", file), file));
                suffix.Add(SpecialPair(Required(p, "sep", file), file));
                break;
            case "TemplateProcessing":
            {
                var specials = Required(p, "special_tokens", file);
                bool seenSequence = false;
                foreach (var piece in Required(p, "single", file).EnumerateArray())
                {
                    if (piece.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                        continue;
                    }
                    if (!piece.TryGetProperty("SpecialToken", out var st))
                        throw new UllmeException($"'{file}': a TemplateProcessing piece must be a Sequence or a SpecialToken.");
                    string name = Required(st, "id", file).GetString()!;
                    if (!specials.TryGetProperty(name, out var spec))
                        throw new UllmeException($"'{file}': TemplateProcessing uses special token '{name}' that special_tokens does not define.");
                    var target = seenSequence ? suffix : prefix;
                    foreach (var i in Required(spec, "ids", file).EnumerateArray()) target.Add(i.GetInt32());
                }
                break;
            }
            default:
                throw new UllmeException($"'{file}': post_processor type '{type}' is not supported.");
        }
    }

    private static int SpecialPair(JsonElement pair, string file)
    {
        if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2 || !pair[1].TryGetInt32(out int id))
            throw new UllmeException($"'{file}': expected a [token, id] pair in the post_processor.");
        return id;
    }

    private static T ParseReplace<T>(JsonElement e, string file, Func<string?, string?, string, T> make)
    {
        var (literal, regex) = Pattern(Required(e, "pattern", file), file);
        return make(literal, regex, Required(e, "content", file).GetString()!);
    }

    private static (string? Literal, string? Regex) Pattern(JsonElement p, string file)
    {
        if (p.TryGetProperty("String", out var s)) return (s.GetString(), null);
        if (p.TryGetProperty("Regex", out var r)) return (null, r.GetString());
        throw new UllmeException($"'{file}': a pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}.");
    }

    private static CodePointRegex MakeRegex(string pattern, string file)
    {
        try
        {
            return new CodePointRegex(pattern);
        }
        catch (ArgumentException e)
        {
            throw new UllmeException($"'{file}': the regex '{pattern}' cannot be used by .NET: {e.Message}", e);
        }
    }

    private static SplitBehavior Behavior(JsonElement e, string name, SplitBehavior fallback, string file)
    {
        string? b = Opt(e, name)?.GetString();
        if (b is null) return fallback;
        return Enum.TryParse<SplitBehavior>(b, out var v) ? v : throw new UllmeException($"'{file}': split behavior '{b}' is not known.");
    }

    private static char Replacement(JsonElement e)
    {
        string? r = Opt(e, "replacement")?.GetString() ?? Opt(e, "str_rep")?.GetString();
        return string.IsNullOrEmpty(r) ? '\u2581' : r[0];
    }

    private static string PrependScheme(JsonElement e)
    {
        if (Opt(e, "prepend_scheme")?.GetString() is { } scheme) return scheme.ToLowerInvariant();
        // Older files: add_prefix_space true = always, false = never.
        return Flag(e, "add_prefix_space", true) ? "always" : "never";
    }

    private static string TypeOf(JsonElement e, string what, string file)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
            throw new UllmeException($"'{file}': every {what} must be an object with a string \"type\".");
        return t.GetString()!;
    }

    private static JsonElement? Opt(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static JsonElement Required(JsonElement e, string name, string file) =>
        Opt(e, name) ?? throw new UllmeException($"'{file}': missing \"{name}\".");

    private static bool Flag(JsonElement e, string name, bool fallback) =>
        Opt(e, name) is { } v ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => fallback } : fallback;

    private static int Int(JsonElement e, string name, int fallback) => Opt(e, name) is { } v && v.TryGetInt32(out int i) ? i : fallback;
}
