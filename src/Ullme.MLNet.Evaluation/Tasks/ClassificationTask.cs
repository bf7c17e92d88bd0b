using System.Text.Json.Nodes;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Learners;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Classification with a linear probe, MTEB's <c>AbsTaskClassification</c>:
/// <list type="number">
/// <item>For experiment i = 0..9, undersample the training split to at most <see cref="SamplesPerLabel"/> (8)
/// texts per label: shuffle an index list with a fresh NumPy <c>RandomState(seed)</c> (the list is re-shuffled
/// each experiment, so the shuffles compound) and take the first texts of each label in that order -- bit-identical
/// to MTEB's sampling.</item>
/// <item>Embed the union of sampled training texts and the whole evaluation split (instruction on all texts).</item>
/// <item>Per experiment, fit a multinomial logistic regression (ML.NET <c>LbfgsMaximumEntropy</c> with sklearn's
/// objective, at most 100 iterations) and predict the evaluation split.</item>
/// <item>Report the mean over experiments of accuracy, macro/weighted F1, precision and recall (and average
/// precision for binary tasks, NaN otherwise), plus <c>scores_per_experiment</c>. Main score: <c>accuracy</c>.</item>
/// </list>
/// Without a separate evaluation split the task runs MTEB's cross-validation variant on its one split: 5 folds
/// from a KFold shuffle (NumPy <c>RandomState(seed)</c>), one experiment per fold, each undersampled as above.
/// </summary>
public sealed class ClassificationTask : EvaluationTask
{
    private readonly IReadOnlyList<LabeledText> _train;
    private readonly IReadOnlyDictionary<string, IReadOnlyList<LabeledText>> _eval;
    private readonly string? _crossValidationSplit;

    /// <summary>Train on <paramref name="train"/>, evaluate each split of <paramref name="eval"/>.</summary>
    public ClassificationTask(string name, IReadOnlyList<LabeledText> train,
        IReadOnlyDictionary<string, IReadOnlyList<LabeledText>> eval) : base(name)
    {
        if (train.Count == 0) throw new UllmeException($"task {name}: empty training split");
        if (eval.Count == 0) throw new UllmeException($"task {name}: no evaluation split");
        foreach (var (split, rows) in eval)
            if (rows.Count == 0) throw new UllmeException($"task {name}: split '{split}' is empty");
        _train = train;
        _eval = eval;
    }

    /// <summary>Cross-validation on a single split named <paramref name="split"/> (MTEB's is_cross_validation).</summary>
    public ClassificationTask(string name, string split, IReadOnlyList<LabeledText> data) : base(name)
    {
        if (data.Count < 2 * Folds) throw new UllmeException($"task {name}: cross-validation needs at least {2 * Folds} texts, split '{split}' has {data.Count}");
        _train = data;
        _eval = new Dictionary<string, IReadOnlyList<LabeledText>> { [split] = data };
        _crossValidationSplit = split;
    }

    public override TaskType Type => TaskType.Classification;

    public override string MainScore => "accuracy";

    public override IReadOnlyList<string> Splits => _eval.Keys.ToArray();

    /// <summary>MTEB's samples_per_label.</summary>
    public int SamplesPerLabel { get; init; } = 8;

    /// <summary>MTEB's n_experiments.</summary>
    public int Experiments { get; init; } = 10;

    /// <summary>Folds of the cross-validation variant (MTEB's n_splits).</summary>
    public const int Folds = 5;

    /// <summary>Maximum L-BFGS iterations (MTEB: LogisticRegression(max_iter=100)).</summary>
    public int MaxIterations { get; init; } = 100;

    public bool IsCrossValidation => _crossValidationSplit is not null;

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        if (_crossValidationSplit is string cvSplit)
        {
            var data = context.TakeSpread(_train);
            int labels = _train.Select(t => t.Label).Distinct(StringComparer.Ordinal).Count();
            context.WarnIfFewerRowsThanLabels(this, cvSplit, $"split '{cvSplit}'", data.Count, labels);
            // Each fold's test part must be able to hold every label for accuracy to mean anything.
            if (data.Count >= labels && data.Count / Folds < labels)
                context.Warn(this, cvSplit, $"each of the {Folds} cross-validation folds tests about {data.Count / Folds} rows for {labels} labels, so the {MainScore} is not meaningful" +
                    (context.Limit is int n ? $" (--limit {n}: raise it to at least {Folds * labels})" : ""));
            result[cvSplit] = CrossValidate(context, cvSplit, data);
            return result;
        }

        var train = context.TakeSpread(_train);
        int trainLabels = _train.Select(t => t.Label).Distinct(StringComparer.Ordinal).Count();
        foreach (var split in _eval.Keys)
            context.WarnIfFewerRowsThanLabels(this, split, "the training split", train.Count, trainLabels);
        var labelIndex = LabelIndex(train);
        var trainY = train.Select(t => labelIndex[t.Label]).ToArray();
        var selections = new List<int[]>();
        List<int>? order = null;
        for (int i = 0; i < Experiments; i++)
        {
            var (selected, shuffled) = Undersample(trainY, context.Seed, order);
            order = shuffled;
            selections.Add(selected);
        }
        var union = selections.SelectMany(s => s).Distinct().Order().ToArray();
        var unionVectors = context.Embed(this, "train texts", union.Select(i => train[i].Text).ToArray(), TextRole.Symmetric);
        var vectorOf = new Dictionary<int, float[]>();
        for (int i = 0; i < union.Length; i++) vectorOf[union[i]] = unionVectors[i];

        foreach (var (split, all) in _eval)
        {
            var rows = context.TakeSpread(all);
            context.WarnIfFewerRowsThanLabels(this, split, $"split '{split}'", rows.Count, all.Select(r => r.Label).Distinct(StringComparer.Ordinal).Count());
            var testX = context.Embed(this, $"{split}: texts", rows.Select(r => r.Text).ToArray(), TextRole.Symmetric);
            // Labels never seen in training still need an index (they can only be mispredicted).
            var index = new Dictionary<string, int>(labelIndex, StringComparer.Ordinal);
            foreach (var r in rows) index.TryAdd(r.Label, index.Count);
            var testY = rows.Select(r => index[r.Label]).ToArray();
            var experiments = new List<ClassificationScores>();
            for (int e = 0; e < selections.Count; e++)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                context.Report(this, $"{split}: classifier {e + 1}/{selections.Count}", e, selections.Count);
                var sel = selections[e];
                var predicted = context.Learners.Classifier.FitPredict(sel.Select(i => vectorOf[i]).ToArray(),
                    sel.Select(i => trainY[i]).ToArray(), testX, index.Count, context.Seed, MaxIterations);
                experiments.Add(ClassificationMetrics.Compute(testY, predicted));
            }
            result[split] = Average(experiments);
        }
        return result;
    }

    private SplitScores CrossValidate(EvaluationContext context, string split, IReadOnlyList<LabeledText> data)
    {
        if (data.Count < 2 * Folds)
            throw new UllmeException($"task {Name}: {Folds}-fold cross-validation needs at least {2 * Folds} texts, got {data.Count} (raise --limit)");
        var index = LabelIndex(data);
        var y = data.Select(d => index[d.Label]).ToArray();
        var vectors = context.Embed(this, $"{split}: texts", data.Select(d => d.Text).ToArray(), TextRole.Symmetric);
        var experiments = new List<ClassificationScores>();
        List<int>? order = null;
        var folds = KFold(data.Count, Folds, context.Seed);
        for (int f = 0; f < folds.Count; f++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            context.Report(this, $"{split}: fold {f + 1}/{folds.Count}", f, folds.Count);
            var (trainIdx, testIdx) = folds[f];
            var foldY = trainIdx.Select(i => y[i]).ToArray();
            var (selected, shuffled) = Undersample(foldY, context.Seed, order);
            order = shuffled;
            var predicted = context.Learners.Classifier.FitPredict(selected.Select(i => vectors[trainIdx[i]]).ToArray(),
                selected.Select(i => foldY[i]).ToArray(), testIdx.Select(i => vectors[i]).ToArray(), index.Count,
                context.Seed, MaxIterations);
            experiments.Add(ClassificationMetrics.Compute(testIdx.Select(i => y[i]).ToArray(), predicted));
        }
        return Average(experiments);
    }

    /// <summary>
    /// MTEB's <c>_undersample_data</c>: shuffle <paramref name="previousOrder"/> (or 0..n-1) in place with a fresh
    /// <c>RandomState(seed)</c>, then keep the first <see cref="SamplesPerLabel"/> indices of each label in that
    /// order. Returns the kept indices (in shuffled order) and the shuffled list for the next experiment. A list
    /// carried over from a larger set keeps only indices valid here, as MTEB's indexing would fail otherwise.
    /// </summary>
    internal (int[] Selected, List<int> Order) Undersample(IReadOnlyList<int> labels, int seed, List<int>? previousOrder)
    {
        var order = previousOrder ?? Enumerable.Range(0, labels.Count).ToList();
        new NumpyRandomState((uint)seed).Shuffle(order);
        var counts = new Dictionary<int, int>();
        var selected = new List<int>();
        foreach (int i in order)
        {
            if (i >= labels.Count) continue;
            int c = counts.GetValueOrDefault(labels[i]);
            if (c < SamplesPerLabel)
            {
                selected.Add(i);
                counts[labels[i]] = c + 1;
            }
        }
        return (selected.ToArray(), order);
    }

    /// <summary>
    /// sklearn's <c>KFold(n_splits, shuffle=True, random_state=seed)</c>: indices 0..n-1 shuffled by
    /// <c>RandomState(seed)</c>, cut into folds of n/k (the first n%k folds one longer); both a fold's test indices
    /// and its training indices (the rest) come out in ascending order, as sklearn returns them.
    /// </summary>
    internal static List<(int[] Train, int[] Test)> KFold(int n, int folds, int seed)
    {
        var indices = Enumerable.Range(0, n).ToList();
        new NumpyRandomState((uint)seed).Shuffle(indices);
        var result = new List<(int[], int[])>();
        int start = 0;
        for (int f = 0; f < folds; f++)
        {
            int size = n / folds + (f < n % folds ? 1 : 0);
            var test = indices.GetRange(start, size).Order().ToArray();
            var inTest = new HashSet<int>(test);
            var train = Enumerable.Range(0, n).Where(i => !inTest.Contains(i)).ToArray();
            result.Add((train, test));
            start += size;
        }
        return result;
    }

    private static Dictionary<string, int> LabelIndex(IReadOnlyList<LabeledText> rows)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var label in rows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal)) index[label] = index.Count;
        return index;
    }

    private SplitScores Average(List<ClassificationScores> experiments)
    {
        static double Mean(IEnumerable<double?> values)
        {
            var v = values.Where(x => x.HasValue).Select(x => x!.Value).ToArray();
            return v.Length == 0 ? double.NaN : v.Average();
        }

        var s = NewScores();
        s.Add("accuracy", Mean(experiments.Select(e => (double?)e.Accuracy)));
        s.Add("f1", Mean(experiments.Select(e => (double?)e.F1)));
        s.Add("f1_weighted", Mean(experiments.Select(e => (double?)e.F1Weighted)));
        s.Add("precision", Mean(experiments.Select(e => (double?)e.Precision)));
        s.Add("precision_weighted", Mean(experiments.Select(e => (double?)e.PrecisionWeighted)));
        s.Add("recall", Mean(experiments.Select(e => (double?)e.Recall)));
        s.Add("recall_weighted", Mean(experiments.Select(e => (double?)e.RecallWeighted)));
        s.Add("ap", Mean(experiments.Select(e => e.Ap)));
        s.Add("ap_weighted", Mean(experiments.Select(e => e.ApWeighted)));
        var per = new JsonArray();
        foreach (var e in experiments)
        {
            per.Add(new JsonObject
            {
                ["accuracy"] = e.Accuracy,
                ["f1"] = e.F1,
                ["f1_weighted"] = e.F1Weighted,
                ["precision"] = e.Precision,
                ["precision_weighted"] = e.PrecisionWeighted,
                ["recall"] = e.Recall,
                ["recall_weighted"] = e.RecallWeighted,
                ["ap"] = e.Ap is double ap ? JsonValue.Create(ap) : null,
                ["ap_weighted"] = e.ApWeighted is double apw ? JsonValue.Create(apw) : null,
            });
        }
        s.Details["scores_per_experiment"] = per;
        return s;
    }
}
