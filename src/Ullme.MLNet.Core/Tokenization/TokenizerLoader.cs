using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace Ullme.MLNet.Tokenization;

/// <summary>
/// Loads the tokenizer of a Hugging Face model folder so that its ids equal HF's own <c>tokenizer(text)["input_ids"]</c>.
/// Looks, in order, for <c>tokenizer.json</c>, <c>tokenizer.model</c> (SentencePiece), <c>vocab.txt</c> (BERT WordPiece)
/// and <c>encoder.json</c> + <c>vocab.bpe</c> (GPT-2), and reads <c>tokenizer_config.json</c> /
/// <c>special_tokens_map.json</c> beside them for special tokens and BOS/EOS settings.
/// </summary>
internal static class TokenizerLoader
{
    private static readonly string[] LlamaLikeClasses =
        ["LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"];

    /// <summary>Loads from a model folder, or from a path to one of the tokenizer files itself.</summary>
    public static ITextTokenizer Load(string folderOrFile) => LoadHuggingFace(folderOrFile);

    /// <summary>As <see cref="Load"/>, returning the concrete type (token ↔ id lookups, model_max_length).</summary>
    public static HuggingFaceTokenizer LoadHuggingFace(string folderOrFile)
    {
        ArgumentException.ThrowIfNullOrEmpty(folderOrFile);
        string path = IO.PathGuard.Normalize(folderOrFile);
        string folder;
        string? file = null;
        if (Directory.Exists(path)) folder = path;
        else if (IO.ModelFileGuard.Exists(path, IO.ModelFileGuard.TokenizerFileMaxBytes))
        {
            folder = Path.GetDirectoryName(path)!;
            file = path;
        }
        else throw new UllmeException($"Tokenizer folder or file '{folderOrFile}' does not exist.");

        var config = TokenizerConfig.Read(folder);
        string name = file is null ? "" : Path.GetFileName(file);
        string Candidate(string n) => Path.Combine(folder, n);
        bool Has(string n) => IO.ModelFileGuard.Exists(Candidate(n), IO.ModelFileGuard.TokenizerFileMaxBytes);

        if (file is null ? Has("tokenizer.json") : name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                && !name.Equals("encoder.json", StringComparison.OrdinalIgnoreCase))
            return TokenizerJsonBuilder.Build(file ?? Candidate("tokenizer.json"), config);
        if (file is null ? Has("tokenizer.model") : name.EndsWith(".model", StringComparison.OrdinalIgnoreCase))
            return LoadSentencePiece(file ?? Candidate("tokenizer.model"), config);
        if (file is null ? Has("vocab.txt") : name.EndsWith(".txt", StringComparison.OrdinalIgnoreCase))
            return LoadWordPieceVocab(file ?? Candidate("vocab.txt"), config);
        if (file is null ? Has("encoder.json") && Has("vocab.bpe")
                : name.Equals("encoder.json", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".bpe", StringComparison.OrdinalIgnoreCase))
            return LoadGpt2(Candidate("encoder.json"), Candidate("vocab.bpe"), config);

        throw new UllmeException(file is null
            ? $"No tokenizer found in '{folder}': looked for tokenizer.json, tokenizer.model, vocab.txt, and encoder.json + vocab.bpe."
            : $"'{file}' is not a tokenizer file this loader knows (tokenizer.json, tokenizer.model, vocab.txt, encoder.json, vocab.bpe).");
    }

    /// <summary>SentencePiece <c>tokenizer.model</c> (slow LlamaTokenizer semantics: BOS per add_bos_token).</summary>
    private static HuggingFaceTokenizer LoadSentencePiece(string file, TokenizerConfig config)
    {
        if (config.Legacy == false)
            throw new UllmeException(
                $"'{config.ConfigFile}' sets legacy=false for the SentencePiece model '{file}'; only the legacy behaviour is " +
                "supported for a tokenizer.model-only folder. Add the model's tokenizer.json.");
        SentencePieceTokenizer sp;
        try
        {
            using var stream = IO.ModelFileGuard.OpenRead(file, IO.ModelFileGuard.TokenizerFileMaxBytes);
            // Microsoft.ML.Tokenizers' SentencePiece BPE gives sentencepiece's ids (digits split, byte fallback,
            // whitespace handling); we pass no BOS/EOS and add them ourselves so "" encodes to [BOS] as HF does.
            sp = SentencePieceTokenizer.Create(stream, false, false);
        }
        catch (Exception e) when (e is not UllmeException)
        {
            throw new UllmeException($"'{file}' is not a valid SentencePiece model: {e.Message}", e);
        }
        var model = new SentencePieceModel(sp);
        var vocab = model.Vocabulary;
        var added = new List<AddedToken>();
        foreach (var t in config.AddedTokensDecoder) added.Add(t);
        AddSpecialIfMissing(added, config.BosToken ?? sp.BeginningOfSentenceToken, vocab);
        AddSpecialIfMissing(added, config.EosToken ?? sp.EndOfSentenceToken, vocab);
        AddSpecialIfMissing(added, config.UnkToken ?? sp.UnknownToken, vocab);
        AddSpecialIfMissing(added, config.PadToken, vocab);

        int? Id(string? token) => token is null ? null : added.FirstOrDefault(a => a.Content == token)?.Id ?? model.TokenToId(token);
        int? bos = Id(config.BosToken ?? sp.BeginningOfSentenceToken), eos = Id(config.EosToken ?? sp.EndOfSentenceToken);
        var prefix = (config.AddBosToken ?? true) && bos is int b ? new[] { b } : [];
        var suffix = (config.AddEosToken ?? false) && eos is int e2 ? new[] { e2 } : [];
        var decoder = new SequenceDecoder([new ReplaceDecoder("\u2581", null, " "), new ByteFallbackDecoder(), new FuseDecoder(), new StripDecoder(' ', 1, 0)]);
        return new HuggingFaceTokenizer("SentencePiece (tokenizer.model)", file, added, null, [], model, decoder, prefix, suffix,
            bos, eos, Id(config.PadToken), Id(config.UnkToken ?? sp.UnknownToken), config.ModelMaxLength);
    }

    /// <summary>BERT <c>vocab.txt</c>: what transformers' BertTokenizerFast builds from it.</summary>
    private static HuggingFaceTokenizer LoadWordPieceVocab(string file, TokenizerConfig config)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int index = 0;
        foreach (string line in IO.ModelFileGuard.ReadLines(file, IO.ModelFileGuard.TokenizerFileMaxBytes))
        {
            string token = line.TrimEnd('\r', '\n').Trim();
            // Like HF's load_vocab, the line number is the id; a repeated token keeps its last id.
            vocab[token] = index++;
        }
        if (vocab.Count == 0) throw new UllmeException($"'{file}' is empty; expected one WordPiece token per line.");

        string unk = config.UnkToken ?? "[UNK]";
        string cls = config.ClsToken ?? "[CLS]", sep = config.SepToken ?? "[SEP]";
        string pad = config.PadToken ?? "[PAD]", mask = config.MaskToken ?? "[MASK]";
        var added = new List<AddedToken>(config.AddedTokensDecoder);
        foreach (string special in new[] { pad, unk, cls, sep, mask }) AddSpecialIfMissing(added, special, vocab);

        bool lower = config.DoLowerCase ?? true;
        var normalizer = new BertNormalizer(true, config.TokenizeChineseChars ?? true, config.StripAccents, lower);
        if (normalizer.NeedsUnicodeNormalization) HfNormalizer.EnsureUnicodeNormalizationWorks(file);
        var model = new WordPieceModel(vocab, unk, "##", 100, file);
        int? Id(string t) => vocab.TryGetValue(t, out int id) ? id : added.FirstOrDefault(a => a.Content == t)?.Id;
        int[] prefix = Id(cls) is int c ? [c] : [];
        int[] suffix = Id(sep) is int s ? [s] : [];
        return new HuggingFaceTokenizer("WordPiece (vocab.txt)", file, added, normalizer, [new BertPreTokenizer()], model,
            new WordPieceDecoder("##", true), prefix, suffix, Id(config.BosToken ?? cls), Id(config.EosToken ?? sep), Id(pad), Id(unk),
            config.ModelMaxLength);
    }

    /// <summary>GPT-2's <c>encoder.json</c> + <c>vocab.bpe</c>: byte-level BPE with the GPT-2 regex.</summary>
    private static HuggingFaceTokenizer LoadGpt2(string encoderFile, string mergesFile, TokenizerConfig config)
    {
        if (!IO.ModelFileGuard.Exists(encoderFile, IO.ModelFileGuard.TokenizerFileMaxBytes) || !IO.ModelFileGuard.Exists(mergesFile, IO.ModelFileGuard.TokenizerFileMaxBytes))
            throw new UllmeException($"A GPT-2 tokenizer needs both '{encoderFile}' and '{mergesFile}'.");
        Dictionary<string, int> vocab;
        using (var doc = IO.ModelFileGuard.ParseJson(encoderFile, IO.ModelFileGuard.TokenizerFileMaxBytes, allowTrailingCommas: false))
            vocab = TokenizerJsonBuilder.ReadVocab(doc.RootElement, encoderFile);
        var merges = new List<(string, string)>();
        int lineNo = 0;
        foreach (string raw in IO.ModelFileGuard.ReadLines(mergesFile, IO.ModelFileGuard.TokenizerFileMaxBytes))
        {
            lineNo++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || line.IndexOf(' ', space + 1) >= 0)
                throw new UllmeException($"'{mergesFile}' line {lineNo}: expected two tokens separated by one space, got '{line}'.");
            merges.Add((line[..space], line[(space + 1)..]));
        }
        var model = new BpeModel(vocab, merges, null, false, false, false, null, null, mergesFile);
        string endOfText = "<|endoftext|>";
        var added = new List<AddedToken>(config.AddedTokensDecoder);
        foreach (string? t in new[] { config.BosToken ?? endOfText, config.EosToken ?? endOfText, config.UnkToken ?? endOfText, config.PadToken })
            AddSpecialIfMissing(added, t, vocab);
        int? Id(string? t) => t is null ? null : vocab.TryGetValue(t, out int id) ? id : added.FirstOrDefault(a => a.Content == t)?.Id;
        int? bos = Id(config.BosToken ?? endOfText);
        int[] prefix = config.AddBosToken == true && bos is int b ? [b] : [];
        return new HuggingFaceTokenizer("byte-level BPE (encoder.json + vocab.bpe)", encoderFile, added, null,
            [new ByteLevelPreTokenizer(config.AddPrefixSpace ?? false, true)], model, new ByteLevelDecoder(), prefix, [],
            bos, Id(config.EosToken ?? endOfText), Id(config.PadToken), Id(config.UnkToken ?? endOfText), config.ModelMaxLength);
    }

    /// <summary>Registers a special token (present in the vocabulary) as an added token, as transformers does.</summary>
    internal static void AddSpecialIfMissing(List<AddedToken> added, string? token, IReadOnlyDictionary<string, int> vocab)
    {
        if (string.IsNullOrEmpty(token) || added.Any(a => a.Content == token)) return;
        if (vocab.TryGetValue(token, out int id)) added.Add(new AddedToken(id, token, Special: true));
    }

    internal static bool IsLlamaLike(string? tokenizerClass) => tokenizerClass is not null && LlamaLikeClasses.Contains(tokenizerClass);
}

/// <summary>Wraps Microsoft.ML.Tokenizers' SentencePiece model: each text segment (between added tokens) is one call.</summary>
internal sealed class SentencePieceModel : ITokenModel
{
    private readonly SentencePieceTokenizer _sp;
    private readonly string?[] _idToToken;
    private readonly bool _removeExtraWhitespaces;
    private readonly bool _addDummyPrefix;

    public SentencePieceModel(SentencePieceTokenizer sp)
    {
        _sp = sp;
        Vocabulary = sp.Vocabulary.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        MaxId = Vocabulary.Count == 0 ? -1 : Vocabulary.Values.Max();
        _idToToken = new string?[MaxId + 1];
        foreach (var (token, id) in Vocabulary) _idToToken[id] = token;
        var normalizer = sp.Normalizer as SentencePieceNormalizer;
        _removeExtraWhitespaces = normalizer?.RemoveExtraWhiteSpaces ?? false;
        _addDummyPrefix = sp.AddDummyPrefix;
    }

    public Dictionary<string, int> Vocabulary { get; }

    public int MaxId { get; }

    public int VocabularyCount => Vocabulary.Count;

    public int? TokenToId(string token) => Vocabulary.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        ReadOnlySpan<char> core = _removeExtraWhitespaces ? word.Trim(' ') : word;
        // sentencepiece strips a spaces-only text to nothing (no dummy prefix); ML.Tokenizers 2.0.1 emits "▁".
        if (core.IsEmpty && _removeExtraWhitespaces) return;
        // ML.Tokenizers 2.0.1 returns no ids at all for a text of one character ("a", " a", "3"); sentencepiece's
        // BPE on the two symbols "▁" + c gives "▁c" when that piece exists, otherwise "▁" then c (or c's bytes).
        if (core.Length == 1 || (core.Length == 2 && char.IsSurrogatePair(core[0], core[1])))
        {
            if (_addDummyPrefix && Vocabulary.TryGetValue("\u2581" + core.ToString(), out int merged))
            {
                output.Add(merged);
                return;
            }
            if (_addDummyPrefix) AddPiece("\u2581", output);
            AddPiece(core.ToString(), output);
            return;
        }
        output.AddRange(_sp.EncodeToIds(word, addBeginningOfSentence: false, addEndOfSentence: false));
    }

    /// <summary>One symbol: its piece, else its UTF-8 bytes as &lt;0xNN&gt; pieces (byte fallback), else unk.</summary>
    private void AddPiece(string piece, List<int> output)
    {
        if (Vocabulary.TryGetValue(piece, out int id))
        {
            output.Add(id);
            return;
        }
        if (_sp.ByteFallback)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            if (bytes.All(b => Vocabulary.ContainsKey($"<0x{b:X2}>")))
            {
                foreach (byte b in bytes) output.Add(Vocabulary[$"<0x{b:X2}>"]);
                return;
            }
        }
        output.Add(_sp.UnknownId);
    }
}

/// <summary>The parts of tokenizer_config.json / special_tokens_map.json that change ids.</summary>
internal sealed class TokenizerConfig
{
    public string? ConfigFile { get; private set; }
    public string? TokenizerClass { get; private set; }
    public bool? AddBosToken { get; private set; }
    public bool? AddEosToken { get; private set; }
    public bool? AddPrefixSpace { get; private set; }
    public bool? Legacy { get; private set; }
    public string? BosToken { get; private set; }
    public string? EosToken { get; private set; }
    public string? UnkToken { get; private set; }
    public string? PadToken { get; private set; }
    public string? ClsToken { get; private set; }
    public string? SepToken { get; private set; }
    public string? MaskToken { get; private set; }
    public bool? DoLowerCase { get; private set; }
    public bool? StripAccents { get; private set; }
    public bool? TokenizeChineseChars { get; private set; }
    public int? ModelMaxLength { get; private set; }
    public List<AddedToken> AddedTokensDecoder { get; } = new();

    public static TokenizerConfig Read(string folder)
    {
        var config = new TokenizerConfig();
        string map = Path.Combine(folder, "special_tokens_map.json");
        if (IO.ModelFileGuard.Exists(map, IO.ModelFileGuard.ConfigFileMaxBytes)) config.Apply(map, tokensOnly: true);
        string cfg = Path.Combine(folder, "tokenizer_config.json");
        if (IO.ModelFileGuard.Exists(cfg, IO.ModelFileGuard.ConfigFileMaxBytes))
        {
            config.ConfigFile = cfg;
            config.Apply(cfg, tokensOnly: false);
        }
        return config;
    }

    private void Apply(string file, bool tokensOnly)
    {
        using var doc = IO.ModelFileGuard.ParseJson(file, IO.ModelFileGuard.ConfigFileMaxBytes);
        try
        {
            ApplyCore(doc.RootElement, file, tokensOnly);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException)
        {
            throw new UllmeException($"'{file}' holds a value of the wrong type: {e.Message}", e);
        }
    }

    private void ApplyCore(JsonElement root, string file, bool tokensOnly)
    {
        {
            if (root.ValueKind != JsonValueKind.Object) throw new UllmeException($"'{file}' must hold a JSON object.");
            BosToken = Token(root, "bos_token", file) ?? BosToken;
            EosToken = Token(root, "eos_token", file) ?? EosToken;
            UnkToken = Token(root, "unk_token", file) ?? UnkToken;
            PadToken = Token(root, "pad_token", file) ?? PadToken;
            ClsToken = Token(root, "cls_token", file) ?? ClsToken;
            SepToken = Token(root, "sep_token", file) ?? SepToken;
            MaskToken = Token(root, "mask_token", file) ?? MaskToken;
            if (tokensOnly) return;
            TokenizerClass = Str(root, "tokenizer_class");
            AddBosToken = Bool(root, "add_bos_token", file);
            AddEosToken = Bool(root, "add_eos_token", file);
            AddPrefixSpace = Bool(root, "add_prefix_space", file);
            Legacy = Bool(root, "legacy", file);
            DoLowerCase = Bool(root, "do_lower_case", file);
            StripAccents = Bool(root, "strip_accents", file);
            TokenizeChineseChars = Bool(root, "tokenize_chinese_chars", file);
            if (root.TryGetProperty("model_max_length", out var max) && max.ValueKind == JsonValueKind.Number
                && max.TryGetDouble(out double m) && m > 0 && m < int.MaxValue)
                ModelMaxLength = (int)m;
            if (root.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in dec.EnumerateObject())
                {
                    if (!int.TryParse(p.Name, out int id) || p.Value.ValueKind != JsonValueKind.Object)
                        throw new UllmeException($"'{file}': added_tokens_decoder entry '{p.Name}' is not an id with a token object.");
                    AddedTokensDecoder.Add(TokenizerJsonBuilder.ReadAddedToken(p.Value, id, file));
                }
            }
        }
    }

    private static string? Str(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool? Bool(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new UllmeException($"'{file}': '{name}' must be true, false or null."),
        };
    }

    /// <summary>A special token given as a string or as an AddedToken object {"content": ...}.</summary>
    private static string? Token(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            JsonValueKind.Null => null,
            _ => throw new UllmeException($"'{file}': '{name}' must be a string or an object with \"content\"."),
        };
    }
}
