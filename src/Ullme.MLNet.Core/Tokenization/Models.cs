using System.Collections.Concurrent;
using System.Text;

namespace Ullme.MLNet.Tokenization;

/// <summary>The model stage of a tokenizer: turns one pre-tokenized word into ids.</summary>
internal interface ITokenModel
{
    void Tokenize(ReadOnlySpan<char> word, List<int> output);

    int? TokenToId(string token);

    string? IdToToken(int id);

    /// <summary>Largest id the model can produce.</summary>
    int MaxId { get; }

    /// <summary>Number of entries in the model vocabulary (HF's get_vocab_size; new added tokens start here).</summary>
    int VocabularyCount { get; }
}

/// <summary>
/// Thread-safe bounded cache from a word to its ids; looked up by span so a hit allocates nothing. When full it is
/// emptied and refilled (cheap, and frequent words come back at once).
/// </summary>
internal sealed class WordCache
{
    public const int MaxWordLength = 256;

    private readonly int _capacity;
    private readonly ConcurrentDictionary<string, int[]> _map;
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private int _count;

    public WordCache(int capacity)
    {
        _capacity = capacity;
        // Start with room for a few thousand words: a first pass over text adds one per new word, and growing from
        // the default 31 buckets re-hashes the map a dozen times on the way.
        _map = new ConcurrentDictionary<string, int[]>(Environment.ProcessorCount, Math.Min(capacity, 8192), StringComparer.Ordinal);
        _lookup = _map.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public bool TryGet(ReadOnlySpan<char> word, out int[] ids) => _lookup.TryGetValue(word, out ids!);

    public void Add(ReadOnlySpan<char> word, int[] ids)
    {
        if (word.Length > MaxWordLength) return;
        if (Volatile.Read(ref _count) >= _capacity)
        {
            lock (_map)
            {
                if (_count >= _capacity)
                {
                    _map.Clear();
                    Volatile.Write(ref _count, 0);
                }
            }
        }
        if (_lookup.TryAdd(word, ids)) Interlocked.Increment(ref _count);
    }
}

/// <summary>
/// HF's BPE model: split a word into characters (with optional byte fallback to &lt;0xNN&gt; tokens and fused unknowns),
/// then repeatedly apply the lowest-ranked merge, leftmost first. Microsoft.ML.Tokenizers' BpeTokenizer has no
/// byte_fallback or ignore_merges and applies its own byte-level mapping, so one BPE core of ours serves every
/// tokenizer.json BPE variant (byte-level GPT-2/Qwen/Llama-3 and SentencePiece-style Llama-2/Mistral).
/// </summary>
internal sealed class BpeModel : ITokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    private readonly string?[] _idToToken;
    private readonly PairTable _merges; // (left id << 32 | right id) → (rank << 32 | merged id)
    private readonly int[] _charIds; // BMP char → id of the single-char token, -1 if none
    private readonly int[] _byteIds; // byte → id of <0xNN>, -1 if none
    private readonly int? _unkId;
    private readonly bool _fuseUnk;
    private readonly bool _byteFallback;
    private readonly bool _ignoreMerges;
    private readonly string? _prefix;
    private readonly string? _suffix;
    private readonly WordCache _cache = new(65536);
    private readonly bool _splitAtMetaspace;

    /// <summary>SentencePiece's word marker, which Llama-2/Mistral normalizers put in place of every space.</summary>
    private const char Metaspace = '\u2581';

    [ThreadStatic] private static BpeWork? t_work;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, string? continuingSubwordPrefix, string? endOfWordSuffix, string file)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        MaxId = vocab.Count == 0 ? -1 : vocab.Values.Max();
        _idToToken = new string?[MaxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (id < 0) throw new UllmeException($"'{file}': token '{token}' has negative id {id}.");
            _idToToken[id] = token;
        }
        _prefix = string.IsNullOrEmpty(continuingSubwordPrefix) ? null : continuingSubwordPrefix;
        _suffix = string.IsNullOrEmpty(endOfWordSuffix) ? null : endOfWordSuffix;
        _fuseUnk = fuseUnk;
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        if (unkToken is not null)
        {
            if (!vocab.TryGetValue(unkToken, out int unk))
                throw new UllmeException($"'{file}': the BPE unk_token '{unkToken}' is not in the vocabulary.");
            _unkId = unk;
        }

        _merges = new PairTable(merges.Count);
        int prefixLength = _prefix?.Length ?? 0;
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (a, b) = merges[rank];
            if (!vocab.TryGetValue(a, out int aId) || !vocab.TryGetValue(b, out int bId))
                throw new UllmeException($"'{file}': merge #{rank} '{a} {b}' uses a token that is not in the vocabulary.");
            string merged = a + (prefixLength > 0 && b.StartsWith(_prefix!, StringComparison.Ordinal) ? b[prefixLength..] : b);
            if (!vocab.TryGetValue(merged, out int newId))
                throw new UllmeException($"'{file}': merge #{rank} '{a} {b}' produces '{merged}', which is not in the vocabulary.");
            // A repeated pair keeps its last rank, as HF's map does.
            _merges.Set(((long)aId << 32) | (uint)bId, ((long)rank << 32) | (uint)newId);
        }

        _charIds = new int[65536];
        Array.Fill(_charIds, -1);
        foreach (var (token, id) in vocab)
            if (token.Length == 1 && !char.IsSurrogate(token[0])) _charIds[token[0]] = id;
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;

        // SentencePiece-style files (Llama-2, Mistral) have no pre-tokenizer: the whole normalized text, spaces turned
        // into ▁, is one BPE "word", so nothing would be cached and every text would pay a merge over all of it. When
        // no merge can join a symbol ending in a non-▁ char to one starting with ▁, no merge ever crosses the point
        // before a "▁word", so merging each "▁word" on its own (and caching it) gives exactly the same ids. A file
        // whose merges break that rule (or that lacks a ▁ token, or uses prefix/suffix) keeps whole-word merging.
        _splitAtMetaspace = _prefix is null && _suffix is null && _charIds[Metaspace] >= 0 && merges.Count > 0;
        foreach (var (a, b) in merges)
        {
            if (!_splitAtMetaspace) break;
            if (b.Length > 0 && b[0] == Metaspace && (a.Length == 0 || a[^1] != Metaspace)) _splitAtMetaspace = false;
        }
    }

    public int MaxId { get; }

    public int VocabularyCount => _vocab.Count;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty) return;
        if (_ignoreMerges && _vocabLookup.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        if (!_splitAtMetaspace || word.Length <= 1)
        {
            TokenizeCached(word, output);
            return;
        }
        // Cut before every ▁ that follows a non-▁ char: "▁the▁▁cat" → "▁the", "▁▁cat".
        int start = 0;
        while (true)
        {
            int cut = NextCut(word, start);
            TokenizeCached(word[start..cut], output);
            if (cut == word.Length) return;
            start = cut;
        }
    }

    /// <summary>End of the piece starting at <paramref name="start"/>: the next ▁ after a non-▁ char, or the end.</summary>
    private static int NextCut(ReadOnlySpan<char> word, int start)
    {
        int i = start;
        while (i < word.Length && word[i] == Metaspace) i++; // the piece's own leading ▁ run
        while (i < word.Length)
        {
            int k = word[i..].IndexOf(Metaspace);
            if (k < 0) return word.Length;
            i += k;
            if (word[i - 1] != Metaspace) return i;
            i++;
        }
        return word.Length;
    }

    private void TokenizeCached(ReadOnlySpan<char> word, List<int> output)
    {
        if (_cache.TryGet(word, out int[] cached))
        {
            output.AddRange(cached.AsSpan());
            return;
        }
        int[] ids = MergeWord(word);
        _cache.Add(word, ids);
        output.AddRange(ids.AsSpan());
    }

    private int[] MergeWord(ReadOnlySpan<char> word)
    {
        var work = t_work ??= new BpeWork();
        work.Reset(word.Length * (4 + (_prefix?.Length ?? 0) + (_suffix?.Length ?? 0)) + 4);
        int n = 0; // symbols
        int pendingUnk = -1;
        bool simple = _prefix is null && _suffix is null;
        for (int i = 0; i < word.Length;)
        {
            UnicodeClasses.CodePointAt(word, i, out int width);
            bool isFirst = i == 0, isLast = i + width >= word.Length;
            int id;
            ReadOnlySpan<char> s;
            if (simple)
            {
                s = word.Slice(i, width);
                id = width == 1 ? _charIds[word[i]] : (_vocabLookup.TryGetValue(s, out int v) ? v : -1);
            }
            else
            {
                var sb = new StringBuilder();
                if (!isFirst && _prefix is not null) sb.Append(_prefix);
                sb.Append(word.Slice(i, width));
                if (isLast && _suffix is not null) sb.Append(_suffix);
                string str = sb.ToString();
                s = str;
                id = _vocab.TryGetValue(str, out int v) ? v : -1;
            }
            i += width;

            if (id >= 0)
            {
                if (pendingUnk >= 0)
                {
                    work.Ids[n++] = pendingUnk;
                    pendingUnk = -1;
                }
                work.Ids[n++] = id;
                continue;
            }
            if (_byteFallback && TryAddBytes(s, work, ref n)) continue;
            if (_unkId is int unk)
            {
                // fuse_unk keeps one pending unknown for a run; otherwise each unknown char is its own [UNK].
                if (pendingUnk >= 0 && !_fuseUnk) work.Ids[n++] = pendingUnk;
                pendingUnk = unk;
            }
            // No unk token: HF silently drops the char.
        }
        if (pendingUnk >= 0) work.Ids[n++] = pendingUnk;
        if (n < 2) return work.Ids.AsSpan(0, n).ToArray();
        return n <= SmallWord ? MergeSmall(work.Ids.AsSpan(0, n), work.Pairs) : MergeAll(work, n);
    }

    /// <summary>Up to this many symbols a word is merged by scanning for the best pair (tiny arrays, no heap).</summary>
    private const int SmallWord = 48;

    /// <summary>
    /// The same merge order as <see cref="MergeAll"/> (lowest rank first, then leftmost; HF's heap order) on a short
    /// word: keep the packed (rank, merged id) of every adjacent pair, take the minimum (the first one on a tie),
    /// merge, close the gap and look up the two pairs that changed.
    /// </summary>
    private int[] MergeSmall(Span<int> ids, long[] pairBuffer)
    {
        int n = ids.Length;
        Span<long> pairs = pairBuffer.AsSpan(0, n - 1);
        for (int i = 0; i + 1 < n; i++) pairs[i] = _merges.Get(ids[i], ids[i + 1]);
        while (n > 1)
        {
            int best = 0;
            long bestValue = pairs[0];
            for (int i = 1; i < n - 1; i++)
            {
                if (pairs[i] < bestValue)
                {
                    bestValue = pairs[i];
                    best = i;
                }
            }
            if (bestValue == long.MaxValue) break;
            ids[best] = (int)bestValue;
            // Remove symbol best+1 and pair best+1 (the pair best now joins the merged symbol and the next one).
            ids[(best + 2)..n].CopyTo(ids[(best + 1)..]);
            if (best + 2 < n - 1) pairs[(best + 2)..(n - 1)].CopyTo(pairs[(best + 1)..]);
            n--;
            if (best > 0) pairs[best - 1] = _merges.Get(ids[best - 1], ids[best]);
            if (best + 1 < n) pairs[best] = _merges.Get(ids[best], ids[best + 1]);
        }
        return ids[..n].ToArray();
    }

    private bool TryAddBytes(ReadOnlySpan<char> s, BpeWork work, ref int n)
    {
        Span<byte> bytes = stackalloc byte[Encoding.UTF8.GetMaxByteCount(s.Length)];
        int count = Encoding.UTF8.GetBytes(s, bytes);
        for (int k = 0; k < count; k++)
            if (_byteIds[bytes[k]] < 0) return false;
        for (int k = 0; k < count; k++) work.Ids[n++] = _byteIds[bytes[k]];
        return true;
    }

    /// <summary>Lowest rank first, then leftmost (HF's heap order); stale queue entries are skipped.</summary>
    private int[] MergeAll(BpeWork work, int n)
    {
        int[] ids = work.Ids, prev = work.Prev, next = work.Next;
        bool[] alive = work.Alive;
        var queue = work.Queue;
        queue.Clear();
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Key(ids[i], ids[i + 1]), out long m)) queue.Enqueue((i, (int)m), Priority(m, i));

        int remaining = n;
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos]) continue;
            int right = next[pos];
            if (right < 0) continue;
            if (!_merges.TryGetValue(Key(ids[pos], ids[right]), out long m) || (int)m != top.NewId) continue;
            ids[pos] = top.NewId;
            alive[right] = false;
            remaining--;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(Key(ids[prev[pos]], ids[pos]), out long lm))
                queue.Enqueue((prev[pos], (int)lm), Priority(lm, prev[pos]));
            if (next[pos] >= 0 && _merges.TryGetValue(Key(ids[pos], ids[next[pos]]), out long rm))
                queue.Enqueue((pos, (int)rm), Priority(rm, pos));
        }

        var result = new int[remaining];
        int k = 0;
        for (int i = 0; i >= 0; i = next[i]) result[k++] = ids[i];
        return result;
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    private static long Priority(long merge, int pos) => (merge & ~0xFFFFFFFFL) | (uint)pos;

    private sealed class BpeWork
    {
        public int[] Ids = new int[64];
        public int[] Prev = new int[64];
        public int[] Next = new int[64];
        public bool[] Alive = new bool[64];
        public long[] Pairs = new long[64];
        public readonly PriorityQueue<(int Pos, int NewId), long> Queue = new();

        public void Reset(int capacity)
        {
            if (Ids.Length >= capacity) return;
            Ids = new int[capacity];
            Prev = new int[capacity];
            Next = new int[capacity];
            Alive = new bool[capacity];
            Pairs = new long[capacity];
        }
    }
}

/// <summary>
/// Open-addressing hash map from a packed (left id, right id) pair to a packed (rank, merged id). .NET's
/// <c>long.GetHashCode</c> is <c>low ^ high</c>, i.e. <c>left ^ right</c> here, and BPE merges are dense among small
/// ids, so a <c>Dictionary&lt;long, long&gt;</c> gets long collision chains (qwen3: up to 444 merges share one hash)
/// and every failed lookup walks them. A multiplicative (Fibonacci) hash with linear probing at load ≤ 2/3 keeps
/// probes at one or two cache lines.
/// </summary>
internal sealed class PairTable
{
    private const long Empty = -1; // ids are non-negative, so no real key is -1
    private readonly Entry[] _entries; // key and value side by side: one cache line per probe
    private readonly int _shift;
    private readonly int _mask;

    private struct Entry
    {
        public long Key;
        public long Value;
    }

    public PairTable(int count)
    {
        int bits = 4;
        while ((1L << bits) < count + count / 2) bits++; // load factor ≤ 2/3
        _entries = new Entry[1 << bits];
        for (int i = 0; i < _entries.Length; i++) _entries[i].Key = Empty;
        _shift = 64 - bits;
        _mask = (1 << bits) - 1;
    }

    private int Slot(long key) => (int)((ulong)(key * unchecked((long)0x9E3779B97F4A7C15)) >> _shift);

    /// <summary>Inserts or overwrites (a repeated pair keeps its last value, as HF's map does).</summary>
    public void Set(long key, long value)
    {
        for (int i = Slot(key); ; i = (i + 1) & _mask)
        {
            ref Entry e = ref _entries[i];
            if (e.Key == Empty || e.Key == key)
            {
                e.Key = key;
                e.Value = value;
                return;
            }
        }
    }

    public bool TryGetValue(long key, out long value)
    {
        Entry[] entries = _entries;
        for (int i = Slot(key); ; i = (i + 1) & _mask)
        {
            ref Entry e = ref entries[i];
            if (e.Key == key)
            {
                value = e.Value;
                return true;
            }
            if (e.Key == Empty)
            {
                value = 0;
                return false;
            }
        }
    }

    /// <summary>The packed (rank, merged id) of a pair, or <see cref="long.MaxValue"/> when the pair has no merge.</summary>
    public long Get(int left, int right) => TryGetValue(((long)left << 32) | (uint)right, out long v) ? v : long.MaxValue;
}

/// <summary>
/// BERT's WordPiece: greedy longest match from the left, continuation pieces carry "##"; a word with an unmatched
/// part, or longer than max_input_chars_per_word code points, becomes [UNK]. Ours because Microsoft.ML.Tokenizers'
/// WordPieceTokenizer loads only a vocab.txt stream, while tokenizer.json carries the vocabulary as a JSON map.
/// </summary>
internal sealed class WordPieceModel : ITokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly string?[] _idToToken;
    private readonly string _prefix;
    private readonly int _unkId;
    private readonly int _maxChars;
    private readonly WordCache _cache = new(65536);

    public WordPieceModel(Dictionary<string, int> vocab, string unkToken, string continuingSubwordPrefix, int maxInputCharsPerWord, string file)
    {
        _vocab = vocab;
        _lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        MaxId = vocab.Count == 0 ? -1 : vocab.Values.Max();
        _idToToken = new string?[MaxId + 1];
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        if (!vocab.TryGetValue(unkToken, out _unkId))
            throw new UllmeException($"'{file}': the WordPiece unk_token '{unkToken}' is not in the vocabulary.");
        _prefix = continuingSubwordPrefix;
        _maxChars = maxInputCharsPerWord;
    }

    public int MaxId { get; }

    public int VocabularyCount => _vocab.Count;

    public string ContinuingSubwordPrefix => _prefix;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty) return;
        if (_cache.TryGet(word, out int[] cached))
        {
            output.AddRange(cached);
            return;
        }
        int[] ids = TokenizeCore(word);
        _cache.Add(word, ids);
        output.AddRange(ids);
    }

    private int[] TokenizeCore(ReadOnlySpan<char> word)
    {
        int codePoints = 0;
        for (int i = 0; i < word.Length; i++) if (!char.IsLowSurrogate(word[i]) || i == 0 || !char.IsHighSurrogate(word[i - 1])) codePoints++;
        if (codePoints > _maxChars) return [_unkId];

        var pieces = new List<int>(4);
        Span<char> buffer = new char[word.Length + _prefix.Length];
        _prefix.CopyTo(buffer);
        int start = 0;
        while (start < word.Length)
        {
            ReadOnlySpan<char> candidates;
            int offset;
            if (start == 0)
            {
                candidates = word;
                offset = 0;
            }
            else
            {
                word[start..].CopyTo(buffer[_prefix.Length..]);
                candidates = buffer[..(_prefix.Length + word.Length - start)];
                offset = _prefix.Length - start; // candidate length for an end position = end + offset
            }
            int end = word.Length, found = -1;
            while (start < end)
            {
                if (_lookup.TryGetValue(candidates[..(end + offset)], out int id))
                {
                    found = id;
                    break;
                }
                end -= end - 2 >= start && char.IsLowSurrogate(word[end - 1]) && char.IsHighSurrogate(word[end - 2]) ? 2 : 1;
            }
            if (found < 0) return [_unkId];
            pieces.Add(found);
            start = end;
        }
        return pieces.ToArray();
    }
}
