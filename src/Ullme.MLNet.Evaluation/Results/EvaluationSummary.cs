using System.Globalization;
using System.Text;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>One line of the summary: a task's main score on one split.</summary>
public sealed record SummaryRow(string Task, TaskType? Type, string Split, string MainScore, double Score, bool Primary);

/// <summary>
/// The table printed after a run: every task and split with its main score (shown as percent, stored as fraction),
/// and the average of each task's primary split (test, else validation/dev, else train) -- the number to quote.
/// </summary>
public sealed class EvaluationSummary
{
    private static readonly string[] SplitPreference = ["test", "validation", "dev", "train"];

    public EvaluationSummary(string modelName, IEnumerable<TaskResult> results)
    {
        ModelName = modelName;
        var rows = new List<SummaryRow>();
        foreach (var r in results)
        {
            var splits = r.Scores.Keys.ToList();
            string? primary = SplitPreference.FirstOrDefault(splits.Contains) ?? splits.FirstOrDefault();
            foreach (var split in splits)
            {
                var s = r.Scores[split][0];
                rows.Add(new SummaryRow(r.TaskName, r.TaskType, split, s.MainScoreName ?? "main_score", s.MainScore,
                    split == primary));
            }
        }
        Rows = rows;
        var primaries = rows.Where(x => x.Primary).Select(x => x.Score).ToArray();
        Average = primaries.Length > 0 ? primaries.Average() : double.NaN;
    }

    public string ModelName { get; }

    public IReadOnlyList<SummaryRow> Rows { get; }

    /// <summary>Mean main score over tasks (primary split each), as a fraction.</summary>
    public double Average { get; }

    /// <summary>A GitHub-flavoured markdown table; scores x100 with two decimals.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Model: `{ModelName}`");
        sb.AppendLine();
        sb.AppendLine("| Task | Type | Split | Metric | Score |");
        sb.AppendLine("|---|---|---|---|---:|");
        foreach (var r in Rows)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Task} | {r.Type?.ToString() ?? ""} | {r.Split}{(r.Primary ? "" : " *")} | {r.MainScore} | {Percent(r.Score)} |");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| **Average** | | | | **{Percent(Average)}** |");
        if (Rows.Any(r => !r.Primary))
        {
            sb.AppendLine();
            sb.AppendLine("\\* not in the average (each task counts once, by its test, else validation/dev, else train split).");
        }
        return sb.ToString();
    }

    public static string Percent(double fraction) =>
        double.IsNaN(fraction) ? "NaN" : (fraction * 100).ToString("0.00", CultureInfo.InvariantCulture);
}
