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
        float[] logProbs;
        long t;
        lock (_forwardLock)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using var tokens = TokenBatch.Build(batch, Model.PadTokenId, Model.Device);
            var hidden = Model.Backbone.Forward(tokens.InputIds, tokens.AttentionMask, AttentionMode.Causal);  // [B, T, H]
            long chunk = ChunkedLogProbs.RowsPerChunk(Model.Config.VocabSize, MaxLogitsPerChunk);
            var lp = ChunkedLogProbs.ForInputs(hidden, tokens.InputIds, tokens.ScoreMask!,
                (h, y) => ChunkedLogProbs.OfRows(h, y, Model.Backbone.LanguageModelLogits, chunk));        // [B, T]
            t = lp.shape[1];
            logProbs = lp.to(ScalarType.Float32).cpu().data<float>().ToArray();
        }
        var results = new ScoreResult[batch.Length];
        for (int b = 0; b < batch.Length; b++)
        {
            // Token j of the row (j ≥ ScoreFrom) is scored from the state at j − 1.
            int from = batch[b].ScoreFrom, count = batch[b].InputIds.Count - from;
            var lp = new float[count];
            Array.Copy(logProbs, b * t + from, lp, 0, count);
            double sum = 0;
            foreach (float v in lp) sum += v;
            results[b] = new ScoreResult(lp, sum, lp.Length == 0 ? double.NaN : sum / lp.Length);
        }
        return results;
    }
}
