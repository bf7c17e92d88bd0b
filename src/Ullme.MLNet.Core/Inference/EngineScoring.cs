using TorchSharp;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>One causal log-likelihood request: the continuation's tokens are scored given the prefix.</summary>
public sealed record ScoreRequest(string Prefix, string Continuation);

/// <summary>A pre-tokenized request: tokens at positions &gt;= <paramref name="ScoreFrom"/> are scored given
/// everything before them. The ids are used exactly as given.</summary>
public sealed record TokenScoreRequest(IReadOnlyList<int> InputIds, int ScoreFrom);

/// <summary>Per-token log-probabilities of a continuation, their sum and mean (NaN when nothing was scored).</summary>
public sealed record ScoreResult(float[] TokenLogProbs, double Sum, double Mean);

public sealed partial class EmbeddingEngine
{
    /// <summary>Positions per chunk × vocabulary stays under this many logits, so full-vocabulary logits are never
    /// materialised for a whole batch at once.</summary>
    private const long MaxLogitsPerChunk = 8L << 20;

    /// <summary>
    /// Causal log-likelihood of each continuation given its prefix: ids = the tokenizer's prefix special tokens
    /// (BOS), then the prefix's tokens, then the continuation's tokens (each tokenized on its own). Token t of the
    /// continuation is scored as log softmax(logits at t-1)[id_t]. The first token of a sequence has no prediction,
    /// so with no BOS and an empty prefix the continuation's first token is not scored.
    /// </summary>
    public ScoreResult[] Score(IReadOnlyList<ScoreRequest> requests, int batchSize = 8,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        var tokenRequests = new TokenScoreRequest[requests.Count];
        for (int i = 0; i < requests.Count; i++)
        {
            if (requests[i]?.Prefix is null || requests[i].Continuation is null)
                throw new UllmeException($"Score request {i} needs both a prefix and a continuation (use empty strings for none).");
            tokenRequests[i] = ToTokenRequest(requests[i]);
        }
        return ScoreTokenIds(tokenRequests, batchSize, progress, cancellationToken);
    }

    /// <summary>Tokenizes a text request the way <see cref="Score"/> does: prefix special tokens (BOS), the
    /// prefix's tokens, then the continuation's tokens, each tokenized on its own.</summary>
    public TokenScoreRequest ToTokenRequest(ScoreRequest request)
    {
        var tok = Model.Tokenizer;
        var ids = new List<int>(tok.PrefixTokenIds);
        if (request.Prefix.Length > 0) ids.AddRange(tok.Encode(request.Prefix, addSpecialTokens: false));
        int from = ids.Count;
        ids.AddRange(tok.Encode(request.Continuation, addSpecialTokens: false));
        return new TokenScoreRequest(ids, Math.Max(1, from));
    }

    /// <summary>Causal log-likelihood of pre-tokenized inputs.</summary>
    public ScoreResult[] ScoreTokenIds(IReadOnlyList<TokenScoreRequest> requests, int batchSize = 8,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        if (!Model.Backbone.HasLanguageModelHead)
            throw new UllmeException($"Model '{Model.ModelId}' ({Model.Config.ModelType}) has no language-model head; scoring needs a decoder.");
        if (batchSize < 1) throw new UllmeException($"batch size must be positive (got {batchSize}).");
        for (int i = 0; i < requests.Count; i++)
        {
            var r = requests[i];
            ValidateIds(r.InputIds, $"request {i}");
            if (r.ScoreFrom < 1 || r.ScoreFrom > r.InputIds.Count)
                throw new UllmeException($"request {i}: score_from {r.ScoreFrom} must be between 1 and the number of tokens ({r.InputIds.Count}).");
        }
        int n = requests.Count;
        var results = new ScoreResult[n];
        var order = Enumerable.Range(0, n).OrderByDescending(i => requests[i].InputIds.Count).ThenBy(i => i).ToArray();
        long tokens = 0;
        int done = 0;
        for (int start = 0; start < n; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(batchSize, n - start);
            var batch = new TokenScoreRequest[count];
            for (int k = 0; k < count; k++) batch[k] = requests[order[start + k]];
            var scored = ScoreBatch(batch);
            for (int k = 0; k < count; k++)
            {
                results[order[start + k]] = scored[k];
                tokens += batch[k].InputIds.Count;
            }
            done += count;
            progress?.Report(new EngineProgress(done, n, tokens));
        }
        return results;
    }

    private ScoreResult[] ScoreBatch(TokenScoreRequest[] batch)
    {
        var rows = batch.Select(r => EncodedText.FromIds(r.InputIds)).ToArray();
        // Which (row, position) pairs predict a scored token, and which token.
        var rowIdx = new List<long>();
        var posIdx = new List<long>();
        var targets = new List<long>();
        var counts = new int[batch.Length];
        for (int b = 0; b < batch.Length; b++)
        {
            var ids = batch[b].InputIds;
            for (int t = batch[b].ScoreFrom; t < ids.Count; t++)
            {
                rowIdx.Add(b);
                posIdx.Add(t - 1);
                targets.Add(ids[t]);
            }
            counts[b] = ids.Count - batch[b].ScoreFrom;
        }
        float[] logProbs;
        lock (_forwardLock)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using var padded = new PaddedBatch(rows, PadId, Model.Device);
            var hidden = Model.Backbone.Forward(padded.InputIds, padded.AttentionMask, AttentionMode.Causal);  // [B, T, H]
            logProbs = GatherTokenLogProbs(hidden, rowIdx, posIdx, targets);
        }
        var results = new ScoreResult[batch.Length];
        int offset = 0;
        for (int b = 0; b < batch.Length; b++)
        {
            var lp = new float[counts[b]];
            Array.Copy(logProbs, offset, lp, 0, counts[b]);
            offset += counts[b];
            double sum = 0;
            foreach (float v in lp) sum += v;
            results[b] = new ScoreResult(lp, sum, lp.Length == 0 ? double.NaN : sum / lp.Length);
        }
        return results;
    }

    /// <summary>log softmax(lm_head(hidden[row, pos]))[target] for each triple, computed in chunks of positions so
    /// that only [chunk, V] logits exist at a time; softmax in float32.</summary>
    private float[] GatherTokenLogProbs(Tensor hidden, List<long> rowIdx, List<long> posIdx, List<long> targets)
    {
        int total = targets.Count;
        var output = new float[total];
        if (total == 0) return output;
        long vocab = Model.Config.VocabSize;
        int chunk = (int)Math.Max(1, Math.Min(total, MaxLogitsPerChunk / Math.Max(1, vocab)));
        var device = hidden.device;
        for (int s = 0; s < total; s += chunk)
        {
            using var scope = NewDisposeScope();
            int c = Math.Min(chunk, total - s);
            var r = tensor(rowIdx.GetRange(s, c).ToArray(), ScalarType.Int64).to(device);
            var p = tensor(posIdx.GetRange(s, c).ToArray(), ScalarType.Int64).to(device);
            var y = tensor(targets.GetRange(s, c).ToArray(), ScalarType.Int64).to(device);
            var states = hidden[r, p];                                                    // [c, H]
            var logits = Model.Backbone.LanguageModelLogits(states).to_type(ScalarType.Float32);  // [c, V]
            var lp = logits.log_softmax(-1).gather(1, y.unsqueeze(1)).squeeze(1);        // [c]
            Array.Copy(lp.cpu().data<float>().ToArray(), 0, output, s, c);
        }
        return output;
    }
}
