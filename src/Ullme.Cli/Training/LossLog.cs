using System.Globalization;
using System.Text;
using Ullme.MLNet.IO;
using Ullme.MLNet.Training;

namespace Ullme.Cli.Training;

/// <summary>One row of <c>losses.csv</c>: the step's loss terms (null = term not trained), learning rate,
/// gradient norm and throughput.</summary>
internal sealed record LossRow(int Step, int Epoch, double LearningRate, double Total, double? Contrastive, double? LanguageModel,
    double? Preference, double? Consistency, double GradientNorm, bool Applied, double SamplesPerSecond, double ElapsedSeconds,
    double? MaskedNextToken = null, double? Evaluation = null);

/// <summary>
/// The per-step loss log of a run. It lives next to the checkpoints and is appended (and flushed) after every step,
/// so a run killed at any moment keeps its history; a resumed run keeps the rows up to the step it resumed from
/// (later rows belong to work that was lost with the kill) and appends from there. The finished run copies it into
/// the output folder as <c>losses.csv</c>.
/// <para>Columns: step, epoch, lr, total, one column per trained term (contrastive, lm, preference, kl; mntp for the
/// masked next-token strategy), grad_norm,
/// applied (0 when the update was skipped for NaN/∞), samples_per_s, elapsed_s (cumulative over resumes).</para>
/// </summary>
internal sealed class LossLog : IDisposable
{
    public const string FileName = "losses.csv";

    private static readonly (string Name, Func<LossRow, double?> Get)[] TermColumns =
    [
        ("contrastive", r => r.Contrastive), ("lm", r => r.LanguageModel), ("preference", r => r.Preference), ("kl", r => r.Consistency),
        ("mntp", r => r.MaskedNextToken),
    ];

    private readonly (string Name, Func<LossRow, double?> Get)[] _terms;
    private readonly StreamWriter _writer;
    private readonly List<LossRow> _rows;

    private LossLog(string path, LossWeights weights, bool mntp, string? evaluation, List<LossRow> kept)
    {
        Path = path;
        EvaluationColumn = evaluation is null ? null : "eval_" + evaluation;
        _terms = TermColumns.Where(t => t.Name switch
        {
            "contrastive" => weights.Contrastive > 0,
            "lm" => weights.LanguageModel > 0,
            "preference" => weights.Preference > 0,
            "kl" => weights.Consistency > 0,
            _ => mntp,
        }).ToArray();
        if (EvaluationColumn is not null) _terms = [.. _terms, (EvaluationColumn, r => r.Evaluation)];
        _rows = kept;
        // Rewrite the kept rows (dropping a torn last line or rows past the resume point), then append per step.
        var sb = new StringBuilder().Append(Header()).Append('\n');
        foreach (var r in kept) sb.Append(Format(r)).Append('\n');
        AtomicFile.WriteAllText(path, sb.ToString());
        _writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false)) { AutoFlush = true };
    }

    public string Path { get; }

    /// <summary>The column of the dev metric (<c>eval_</c> + its name), or null without evaluation.</summary>
    public string? EvaluationColumn { get; }

    /// <summary>All rows, those kept from before a resume included.</summary>
    public IReadOnlyList<LossRow> Rows => _rows;

    /// <summary>Elapsed seconds at the end of the last kept row (0 for a fresh run).</summary>
    public double ElapsedOffset => _rows.Count > 0 ? _rows[^1].ElapsedSeconds : 0;

    /// <summary>Opens the log in <paramref name="directory"/>: fresh (<paramref name="resumeStep"/> null) or keeping
    /// the rows with step ≤ <paramref name="resumeStep"/>. <paramref name="mntp"/>: the run trains masked next-token
    /// prediction (its loss gets the mntp column); <paramref name="evaluation"/>: the dev metric's name (an
    /// <c>eval_</c> column, filled on evaluated steps).</summary>
    public static LossLog Open(string directory, LossWeights weights, int? resumeStep, bool mntp = false, string? evaluation = null)
    {
        Directory.CreateDirectory(directory);
        string path = System.IO.Path.Combine(directory, FileName);
        var kept = resumeStep is int s && File.Exists(path) ? Read(path).Where(r => r.Step <= s).ToList() : [];
        return new LossLog(path, weights, mntp, evaluation, kept);
    }

    public void Append(LossRow row)
    {
        _rows.Add(row);
        _writer.Write(Format(row) + "\n");
    }

    public string Header() => string.Join(',', new[] { "step", "epoch", "lr", "total" }.Concat(_terms.Select(t => t.Name))
        .Concat(["grad_norm", "applied", "samples_per_s", "elapsed_s"]));

    private string Format(LossRow r)
    {
        var fields = new List<string> { I(r.Step), I(r.Epoch), G(r.LearningRate), G(r.Total) };
        fields.AddRange(_terms.Select(t => t.Get(r) is double v ? G(v) : ""));
        fields.AddRange([G(r.GradientNorm), r.Applied ? "1" : "0", r.SamplesPerSecond.ToString("F2", CultureInfo.InvariantCulture),
            r.ElapsedSeconds.ToString("F3", CultureInfo.InvariantCulture)]);
        return string.Join(',', fields);
    }

    /// <summary>Reads a log written by this class; a torn or unparsable line ends the read (it can only be the last).</summary>
    public static List<LossRow> Read(string path)
    {
        var rows = new List<LossRow>();
        using var reader = new StreamReader(path);
        string? header = reader.ReadLine();
        if (header is null) return rows;
        var names = header.Split(',');
        int Col(string n) => Array.IndexOf(names, n);
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            var f = line.Split(',');
            if (f.Length != names.Length) break;
            double? Term(string n) => Col(n) is int c and >= 0 && f[c].Length > 0 ? D(f[c]) : null;
            try
            {
                rows.Add(new LossRow(int.Parse(f[Col("step")], CultureInfo.InvariantCulture), int.Parse(f[Col("epoch")], CultureInfo.InvariantCulture),
                    D(f[Col("lr")]), D(f[Col("total")]), Term("contrastive"), Term("lm"), Term("preference"), Term("kl"),
                    D(f[Col("grad_norm")]), f[Col("applied")] == "1", D(f[Col("samples_per_s")]), D(f[Col("elapsed_s")]), Term("mntp"),
                    Array.FindIndex(names, n => n.StartsWith("eval_", StringComparison.Ordinal)) is int e and >= 0 && f[e].Length > 0 ? D(f[e]) : null));
            }
            catch (Exception e) when (e is FormatException or OverflowException or IndexOutOfRangeException)
            {
                break;
            }
        }
        return rows;
    }

    public void Dispose() => _writer.Dispose();

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>Round-trippable doubles ("NaN", "Infinity" included).</summary>
    private static string G(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    private static double D(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>A row from a progress report.</summary>
    public static LossRow FromProgress(TrainingProgress p, double samplesPerSecond, double elapsedSeconds) =>
        new(p.Step, p.Epoch, p.LearningRate, p.Losses.Total, p.Losses.Contrastive, p.Losses.LanguageModel, p.Losses.Preference,
            p.Losses.Consistency, p.GradientNorm, p.Applied, samplesPerSecond, elapsedSeconds, p.Losses.MaskedNextToken, p.Evaluation);
}
