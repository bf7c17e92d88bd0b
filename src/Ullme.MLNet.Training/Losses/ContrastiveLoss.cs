using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Losses;

/// <summary>How <see cref="ContrastiveLoss"/> scores a (query, document) pair before dividing by the temperature.</summary>
public enum ContrastiveSimilarity
{
    /// <summary>cos(e_q, e_d): the standard InfoNCE score (SimCSE, E5, GritLM).</summary>
    Cosine,

    /// <summary>−‖ê_q − ê_d‖₂ on L2-normalised vectors: NT-Xent on negative Euclidean distance, as in ULLME's code.
    /// Since ‖ê_q − ê_d‖² = 2 − 2·cos, it ranks exactly like cosine but has a different loss landscape.</summary>
    NegativeL2,
}

/// <summary>
/// InfoNCE with in-batch negatives and hard negatives.
/// <para>
/// Each query q_i is scored against every candidate in the batch: all positives p_1..p_Q (the other queries'
/// positives act as in-batch negatives) followed by all hard negatives n_1..n_N of the whole batch. Its own positive
/// p_i is the target:
/// </para>
/// <code>
///   s(q, d) = cos(e_q, e_d) / τ
///   L = −(1/Q) Σ_i log( exp s(q_i, p_i) / Σ_{d ∈ {p_1..p_Q} ∪ {n_1..n_N}} exp s(q_i, d) )
/// </code>
/// <para>
/// A small τ (default 0.05) sharpens the softmax so that near-misses are pushed apart. Computed in float32 (or
/// float64 if the inputs are) whatever the model dtype.
/// </para>
/// </summary>
public sealed class ContrastiveLoss
{
    /// <summary>τ, the softmax temperature. Default 0.05.</summary>
    public double Temperature { get; init; } = 0.05;

    /// <summary>Pair score. Default <see cref="ContrastiveSimilarity.Cosine"/>.</summary>
    public ContrastiveSimilarity Similarity { get; init; } = ContrastiveSimilarity.Cosine;

    /// <summary>
    /// Symmetric InfoNCE: the mean of the query → document loss above and the document → query loss, where each
    /// positive p_i picks its own query among all queries of the batch:
    /// <c>L_dq = −(1/Q) Σ_i log( exp s(p_i, q_i) / Σ_j exp s(p_i, q_j) )</c>, <c>L = (L_qd + L_dq) / 2</c>.
    /// Hard negatives take part in the query → document direction only. Default false.
    /// </summary>
    public bool Symmetric { get; init; }

    /// <summary>The loss, averaged over queries.</summary>
    /// <param name="queries">[Q, H] query embeddings (not necessarily normalised).</param>
    /// <param name="positives">[Q, H]; row i is query i's positive.</param>
    /// <param name="hardNegatives">[N, H] every hard negative of the batch (any query's), or null/empty.</param>
    /// <returns>Scalar loss.</returns>
    public Tensor Compute(Tensor queries, Tensor positives, Tensor? hardNegatives = null) => ComputeMasked(queries, positives, hardNegatives, null);

    /// <summary>The loss with some candidates left out of some queries' softmax (false-negative masking).</summary>
    /// <param name="queries">[Q, H].</param>
    /// <param name="positives">[Q, H]; row i is query i's positive.</param>
    /// <param name="hardNegatives">[N, H] or null.</param>
    /// <param name="excluded">Bool [Q, Q + N] in the candidate order above (positives, then hard negatives): true where
    /// candidate j is not a negative of query i (e.g. <see cref="FalseNegatives"/>); its logit becomes −∞, so it takes
    /// no share of the softmax and gets no gradient. Never true on a query's own positive. In the symmetric direction
    /// the positives' block [Q, Q] masks the queries the same way. Null: nothing excluded.</param>
    public Tensor ComputeMasked(Tensor queries, Tensor positives, Tensor? hardNegatives, Tensor? excluded)
    {
        if (Temperature <= 0 || !double.IsFinite(Temperature))
            throw new UllmeException($"ContrastiveLoss: Temperature must be a positive number, got {Temperature}.");
        LossChecks.Rank(queries, 2, "queries");
        LossChecks.Rank(positives, 2, "positives");
        if (!queries.shape.SequenceEqual(positives.shape))
            throw new UllmeException($"ContrastiveLoss: positives must have the shape of queries [{string.Join(", ", queries.shape)}], got [{string.Join(", ", positives.shape)}].");
        if (hardNegatives is not null)
        {
            LossChecks.Rank(hardNegatives, 2, "hardNegatives");
            if (hardNegatives.shape[1] != queries.shape[1])
                throw new UllmeException($"ContrastiveLoss: hardNegatives width {hardNegatives.shape[1]} differs from the query width {queries.shape[1]}.");
        }

        using var scope = NewDisposeScope();
        var q = LossChecks.Upcast(queries);
        var candidates = hardNegatives is not null && hardNegatives.shape[0] > 0
            ? cat([LossChecks.Upcast(positives), LossChecks.Upcast(hardNegatives)], 0)   // [Q + N, H]
            : LossChecks.Upcast(positives);                                                 // [Q, H]
        var logits = Scores(q, candidates, Similarity).Div(Temperature);                   // [Q, Q + N]
        long count = q.shape[0];
        if (excluded is not null)
        {
            if (excluded.dtype != ScalarType.Bool || !excluded.shape.SequenceEqual(logits.shape))
                throw new UllmeException($"ContrastiveLoss: excluded must be a bool tensor [{string.Join(", ", logits.shape)}], got {excluded.dtype} [{string.Join(", ", excluded.shape)}].");
            if (excluded.narrow(1, 0, count).diagonal().any().item<bool>())
                throw new UllmeException("ContrastiveLoss: excluded masks a query's own positive.");
            logits = logits.MaskedFill(excluded.to(logits.device), double.NegativeInfinity);
        }
        var target = ScalarOps.Arange(count, ScalarType.Int64, q.device);                   // [Q]
        var loss = nn.functional.cross_entropy(logits, target);
        if (Symmetric)
        {
            var reverse = Scores(LossChecks.Upcast(positives), q, Similarity).Div(Temperature);  // [Q, Q]: p_i against every query
            if (excluded is not null) reverse = reverse.MaskedFill(excluded.narrow(1, 0, count).to(reverse.device), double.NegativeInfinity);
            loss = loss.Add(nn.functional.cross_entropy(reverse, target)).Mul(0.5);
        }
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// InfoNCE with several positives per query, as supervised contrastive learning's L_out (Khosla et al. 2020): each
    /// of query i's positives P_i is a target in turn, with the query's other positives left out of that term's softmax
    /// (they are not its negatives), and the terms are averaged per query:
    /// <code>
    ///   L = −(1/Q) Σ_i (1/|P_i|) Σ_{j ∈ P_i} log( exp s(q_i, c_j) / Σ_{c ∉ P_i \ {j}} exp s(q_i, c) )
    /// </code>
    /// over the candidates [positives (Q) | hard negatives (N) | extra positives (E)]; every other query's positives,
    /// extra ones included, are in-batch negatives. With one positive per query it is <see cref="ComputeMasked"/>. In the
    /// symmetric direction each query's first positive picks its query, as there.
    /// </summary>
    /// <param name="queries">[Q, H].</param>
    /// <param name="positives">[Q, H]: each query's first positive.</param>
    /// <param name="hardNegatives">[N, H] or null.</param>
    /// <param name="extraPositives">[E, H]: the further positives, flattened.</param>
    /// <param name="extraOwners">E query indices: whose positive each row of <paramref name="extraPositives"/> is.</param>
    /// <param name="excluded">Bool [Q, Q + N + E] or null, as in <see cref="ComputeMasked"/>; an exclusion of a query's own
    /// extra positive is ignored (it is a positive).</param>
    public Tensor ComputeMultiPositive(Tensor queries, Tensor positives, Tensor? hardNegatives, Tensor extraPositives, IReadOnlyList<int> extraOwners, Tensor? excluded = null)
    {
        ArgumentNullException.ThrowIfNull(extraPositives);
        ArgumentNullException.ThrowIfNull(extraOwners);
        LossChecks.Rank(extraPositives, 2, "extraPositives");
        long qn = queries.shape[0];
        if (extraPositives.shape[0] != extraOwners.Count)
            throw new UllmeException($"ContrastiveLoss: {extraPositives.shape[0]} extra positives but {extraOwners.Count} owners.");
        if (extraOwners.Any(o => o < 0 || o >= qn))
            throw new UllmeException($"ContrastiveLoss: an extra positive's owner is outside the {qn} queries.");
        if (extraPositives.shape[0] > 0 && extraPositives.shape[1] != queries.shape[1])
            throw new UllmeException($"ContrastiveLoss: extraPositives width {extraPositives.shape[1]} differs from the query width {queries.shape[1]}.");
        if (extraOwners.Count == 0) return ComputeMasked(queries, positives, hardNegatives, excluded);
        long n = hardNegatives?.shape[0] ?? 0;
        var others = n > 0 ? cat([hardNegatives!, extraPositives], 0) : extraPositives;
        long c = qn + n + extraOwners.Count;

        // Rows: one per (query, positive) pair, with the query's other positives masked.
        var own = new bool[qn, c];
        for (int i = 0; i < qn; i++) own[i, i] = true;
        for (int k = 0; k < extraOwners.Count; k++) own[extraOwners[k], qn + n + k] = true;
        var rowQuery = new List<long>();
        var rowTarget = new List<long>();
        var rowWeight = new List<double>();
        var rowMask = new List<bool>();
        for (int i = 0; i < qn; i++)
        {
            var mine = Enumerable.Range(0, (int)c).Where(j => own[i, j]).ToList();
            foreach (int j in mine)
            {
                rowQuery.Add(i);
                rowTarget.Add(j);
                rowWeight.Add(1.0 / (mine.Count * qn));
                for (int m = 0; m < c; m++) rowMask.Add(own[i, m] && m != j);
            }
        }

        using var scope = NewDisposeScope();
        var device = queries.device;
        var ownMask = tensor(own, device: device);
        Tensor? keptExcluded = null;
        if (excluded is not null)
        {
            if (excluded.dtype != ScalarType.Bool || excluded.shape.Length != 2 || excluded.shape[0] != qn || excluded.shape[1] != c)
                throw new UllmeException($"ContrastiveLoss: excluded must be a bool tensor [{qn}, {c}], got {excluded.dtype} [{string.Join(", ", excluded.shape)}].");
            keptExcluded = excluded.to(device).logical_and(ownMask.logical_not());
        }
        var q = LossChecks.Upcast(queries);
        var candidates = cat([LossChecks.Upcast(positives), LossChecks.Upcast(others)], 0);        // [C, H]
        var logits = Scores(q, candidates, Similarity).Div(Temperature);                           // [Q, C]
        if (keptExcluded is not null) logits = logits.MaskedFill(keptExcluded, double.NegativeInfinity);
        var rows = tensor(rowQuery.ToArray(), device: device);
        var masked = logits.index_select(0, rows)
            .MaskedFill(tensor(rowMask.ToArray(), device: device).reshape(rowQuery.Count, c), double.NegativeInfinity);
        var terms = nn.functional.cross_entropy(masked, tensor(rowTarget.ToArray(), device: device), reduction: nn.Reduction.None);
        var loss = terms.mul(tensor(rowWeight.ToArray(), device: device).to(terms.dtype)).sum();
        if (Symmetric)
        {
            var target = ScalarOps.Arange(qn, ScalarType.Int64, q.device);
            var reverse = Scores(LossChecks.Upcast(positives), q, Similarity).Div(Temperature);    // [Q, Q]
            if (keptExcluded is not null) reverse = reverse.MaskedFill(keptExcluded.narrow(1, 0, qn), double.NegativeInfinity);
            loss = loss.Add(nn.functional.cross_entropy(reverse, target)).Mul(0.5);
        }
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// False negatives of a batch by text: candidate j (positives in query order, then the hard negatives flattened in
    /// query order) is excluded from query i's negatives when its text equals query i's positive (ordinal), j ≠ i. So a
    /// duplicate positive elsewhere in the batch, or a hard negative that is in fact the positive, is not pushed away.
    /// Returns null when nothing is excluded.
    /// </summary>
    public static bool[,]? FalseNegatives(IReadOnlyList<string> positives, IReadOnlyList<string> hardNegatives)
    {
        int q = positives.Count;
        var mask = new bool[q, q + hardNegatives.Count];
        bool any = false;
        for (int i = 0; i < q; i++)
            for (int j = 0; j < q + hardNegatives.Count; j++)
            {
                if (j == i) continue;
                string candidate = j < q ? positives[j] : hardNegatives[j - q];
                if (string.Equals(candidate, positives[i], StringComparison.Ordinal)) any = mask[i, j] = true;
            }
        return any ? mask : null;
    }

    /// <summary>
    /// GISTEmbed's guided filter: candidate j (same order as <see cref="FalseNegatives"/>) is excluded from query i's
    /// negatives when the guide's cosine of (q_i, c_j) exceeds its cosine of (q_i, p_i), j ≠ i. Inputs are the guide's
    /// embeddings; returns null when nothing is excluded.
    /// </summary>
    public static bool[,]? GuidedFalseNegatives(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> positives, IReadOnlyList<float[]> hardNegatives)
    {
        int q = queries.Count;
        if (positives.Count != q) throw new UllmeException($"ContrastiveLoss: {q} guide query embeddings but {positives.Count} positives.");
        var mask = new bool[q, q + hardNegatives.Count];
        bool any = false;
        for (int i = 0; i < q; i++)
        {
            double own = Cosine(queries[i], positives[i]);
            for (int j = 0; j < q + hardNegatives.Count; j++)
            {
                if (j == i) continue;
                if (Cosine(queries[i], j < q ? positives[j] : hardNegatives[j - q]) > own) any = mask[i, j] = true;
            }
        }
        return any ? mask : null;
    }

    private static double Cosine(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new UllmeException($"ContrastiveLoss: guide embeddings of widths {a.Length} and {b.Length}.");
        double dot = 0, na = 0, nb = 0;
        for (int k = 0; k < a.Length; k++)
        {
            dot += (double)a[k] * b[k];
            na += (double)a[k] * a[k];
            nb += (double)b[k] * b[k];
        }
        return na == 0 || nb == 0 ? 0 : dot / Math.Sqrt(na * nb);
    }

    /// <summary>Pairwise scores [A, B] between rows of <paramref name="a"/> [A, H] and <paramref name="b"/> [B, H].</summary>
    public static Tensor Scores(Tensor a, Tensor b, ContrastiveSimilarity similarity)
    {
        using var scope = NewDisposeScope();
        var an = nn.functional.normalize(a, p: 2, dim: -1);
        var bn = nn.functional.normalize(b, p: 2, dim: -1);
        var cos = an.matmul(bn.transpose(0, 1));                                            // [A, B]
        var result = similarity switch
        {
            ContrastiveSimilarity.Cosine => cos,
            // ‖â − b̂‖² = 2 − 2 cos; the clamp keeps the square root differentiable for identical vectors.
            ContrastiveSimilarity.NegativeL2 => cos.Mul(2).SubtractedFrom(2).ClampMin(1e-12).sqrt().neg(),
            _ => throw new UllmeException($"ContrastiveLoss: unknown Similarity {similarity}."),
        };
        return result.MoveToOuterDisposeScope();
    }
}
