namespace Ullme.MLNet.Tokenization;

/// <summary>
/// A tokenizer assembled from a Hugging Face model folder, running HF's pipeline step by step:
/// <list type="number">
/// <item>added tokens (e.g. <c>&lt;|endoftext|&gt;</c>, <c>&lt;s&gt;</c>, <c>[CLS]</c>) are cut out of the raw text first;</item>
/// <item>each remaining segment is normalized (NFC, BERT cleaning/lowercasing, ▁-prepending, ...);</item>
/// <item>pre-tokenized into words (regex split, byte-level mapping, Metaspace, BERT whitespace/punctuation);</item>
/// <item>each word goes through the model (BPE, WordPiece or SentencePiece) — results are cached per word;</item>
/// <item>the template's special ids (BOS, [CLS] ... [SEP]) are put around the ids.</item>
/// </list>
/// Instances are immutable after loading and safe for concurrent <see cref="Encode"/> calls.
/// Create one with <see cref="TokenizerLoader.Load"/>.
/// </summary>
internal sealed class HuggingFaceTokenizer : ITextTokenizer
{
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly HfNormalizer? _normalizer;
    private readonly PreTokenizerStep[] _preTokenizers;
    private readonly ITokenModel _model;
    private readonly TokenDecoder? _decoder;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly Dictionary<string, AddedToken> _addedByContent;
    private readonly HashSet<string> _specialContents;
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    [ThreadStatic] private static List<(int Start, int End, AddedToken? Token)>? t_segments;
    [ThreadStatic] private static List<(int Start, int End, AddedToken? Token)>? t_subSegments;

    internal HuggingFaceTokenizer(string kind, string source, IReadOnlyList<AddedToken> addedTokens, HfNormalizer? normalizer,
        IReadOnlyList<PreTokenizerStep> preTokenizers, ITokenModel model, TokenDecoder? decoder,
        IReadOnlyList<int> prefix, IReadOnlyList<int> suffix, int? bos, int? eos, int? pad, int? unk, int? modelMaxLength)
    {
        Kind = kind;
        Source = source;
        _normalizer = normalizer;
        _preTokenizers = Flatten(preTokenizers).ToArray();
        _model = model;
        _decoder = decoder;
        _addedById = new Dictionary<int, AddedToken>();
        foreach (var t in addedTokens) _addedById[t.Id] = t;
        _addedByContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (var t in addedTokens) _addedByContent[t.Content] = t;
        _specialContents = addedTokens.Where(t => t.Special).Select(t => t.Content).ToHashSet(StringComparer.Ordinal);
        _rawMatcher = new AddedTokenMatcher(addedTokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        // Normalized added tokens are matched in their normalized form, in normalized text.
        _normalizedMatcher = new AddedTokenMatcher(addedTokens.Where(t => t.Normalized)
            .Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));
        _prefix = prefix.ToArray();
        _suffix = suffix.ToArray();
        BosTokenId = bos;
        EosTokenId = eos;
        PadTokenId = pad;
        UnkTokenId = unk;
        ModelMaxLength = modelMaxLength;
        VocabSize = Math.Max(model.MaxId, addedTokens.Count == 0 ? -1 : addedTokens.Max(t => t.Id)) + 1;
    }

    public string Kind { get; }

    /// <summary>The file the tokenizer was loaded from.</summary>
    public string Source { get; }

    public int VocabSize { get; }

    public int? BosTokenId { get; }

    public int? EosTokenId { get; }

    public int? PadTokenId { get; }

    public int? UnkTokenId { get; }

    /// <summary>tokenizer_config.json's model_max_length, when it is a real limit.</summary>
    public int? ModelMaxLength { get; }

    public IReadOnlyList<int> PrefixTokenIds => _prefix;

    public IReadOnlyList<int> SuffixTokenIds => _suffix;

    /// <summary>The id of a token string (added tokens first, then the model vocabulary), or null.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out var added) ? added.Id : _model.TokenToId(token);

    /// <summary>The token string of an id, or null when the id is unknown.</summary>
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var added) ? added.Content : _model.IdToToken(id);

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = UnicodeClasses.ReplaceLoneSurrogates(text);
        var ids = new List<int>(text.Length / 3 + 4 + _prefix.Length + _suffix.Length);
        if (addSpecialTokens) ids.AddRange(_prefix);
        EncodeText(text, ids);
        if (addSpecialTokens) ids.AddRange(_suffix);
        return ids.ToArray();
    }

    private void EncodeText(string text, List<int> ids)
    {
        if (text.Length == 0) return;
        var segments = t_segments ??= new List<(int, int, AddedToken?)>();
        if (_rawMatcher.IsEmpty)
        {
            segments.Clear();
            segments.Add((0, text.Length, null));
        }
        else _rawMatcher.Split(text, segments);

        foreach (var (start, end, token) in segments)
        {
            if (token is not null)
            {
                ids.Add(token.Id);
                continue;
            }
            if (start == end) continue;
            if (_normalizer is null)
            {
                EncodeNormalized(text.AsSpan(start, end - start), start == 0, ids);
                continue;
            }
            string normalized = _normalizer.Normalize(start == 0 && end == text.Length ? text : text[start..end]);
            EncodeNormalized(normalized, start == 0, ids);
        }
    }

    private void EncodeNormalized(ReadOnlySpan<char> text, bool atOrigin, List<int> ids)
    {
        if (text.IsEmpty) return;
        if (_normalizedMatcher.IsEmpty)
        {
            PreTokenizeAndModel(text, atOrigin, ids);
            return;
        }
        var subSegments = t_subSegments ??= new List<(int, int, AddedToken?)>();
        _normalizedMatcher.Split(text, subSegments);
        foreach (var (start, end, token) in subSegments)
        {
            if (token is not null) ids.Add(token.Id);
            else if (end > start) PreTokenizeAndModel(text[start..end], atOrigin && start == 0, ids);
        }
    }

    private void PreTokenizeAndModel(ReadOnlySpan<char> text, bool atOrigin, List<int> ids)
    {
        if (_preTokenizers.Length == 0)
        {
            _model.Tokenize(text, ids);
            return;
        }
        var scratch = EncodeScratch.Current;
        PieceList input = scratch.A, output = scratch.B;
        input.Clear();
        input.Add(text, atOrigin);
        foreach (var step in _preTokenizers)
        {
            output.Clear();
            for (int i = 0; i < input.Count; i++)
                step.Split(input[i], input.Pieces[i].AtOrigin, output, scratch);
            (input, output) = (output, input);
        }
        for (int i = 0; i < input.Count; i++) _model.Tokenize(input[i], ids);
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            string? token = _addedById.TryGetValue(id, out var added) ? added.Content : _model.IdToToken(id);
            if (token is null) continue; // unknown ids are dropped, as HF does
            if (skipSpecialTokens && _specialContents.Contains(token)) continue;
            tokens.Add(token);
        }
        return _decoder is null ? string.Join(" ", tokens) : _decoder.Decode(tokens);
    }

    private static IEnumerable<PreTokenizerStep> Flatten(IEnumerable<PreTokenizerStep> steps)
    {
        foreach (var step in steps)
        {
            if (step is SequencePreTokenizer seq)
                foreach (var inner in Flatten(seq.Steps)) yield return inner;
            else yield return step;
        }
    }
}
