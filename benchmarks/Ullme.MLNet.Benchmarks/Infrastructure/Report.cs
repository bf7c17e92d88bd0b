using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Ullme.MLNet.Benchmarks.Infrastructure;

/// <summary>One measured configuration: named numbers (texts/s, tokens/s, peak MiB, ...) plus a free-text note.</summary>
public sealed record Measurement(string Section, string Name, Dictionary<string, double> Values, string? Note = null);

/// <summary>A headline ratio with how it was formed and what limits it.</summary>
public sealed record Ratio(string Name, double Value, string Definition, string? Limit = null);

/// <summary>Everything one run measured; written as JSON and as a markdown table.</summary>
public sealed class BenchReport
{
    public Dictionary<string, object?> Machine { get; init; } = new();
    public string Mode { get; init; } = "full";
    public string Texts { get; set; } = "";
    public List<Measurement> Measurements { get; } = [];
    public List<Ratio> Ratios { get; } = [];
    public List<string> Notes { get; } = [];
    public List<string> Plots { get; } = [];

    public Measurement Add(string section, string name, Dictionary<string, double> values, string? note = null)
    {
        var m = new Measurement(section, name, values.ToDictionary(kv => kv.Key, kv => Round(kv.Value)), note);
        Measurements.Add(m);
        Console.WriteLine($"  [{section}] {name}: {string.Join(", ", m.Values.Select(kv => $"{kv.Key}={Fmt(kv.Value)}"))}{(note is null ? "" : "  (" + note + ")")}");
        return m;
    }

    public void AddRatio(string name, double value, string definition, string? limit = null)
    {
        Ratios.Add(new Ratio(name, Round(value), definition, limit));
        Console.WriteLine($"  ratio {name} = {Fmt(Round(value))}  ({definition})");
    }

    private static double Round(double v) => double.IsFinite(v) ? Math.Round(v, v is > -10 and < 10 ? 4 : 1) : v;

    public static string Fmt(double v) => double.IsNaN(v) ? "n/a" : Math.Abs(v) >= 1000
        ? v.ToString("N0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 10 ? v.ToString("0.#", CultureInfo.InvariantCulture)
        : v == 0 || Math.Abs(v) >= 0.01 ? v.ToString("0.###", CultureInfo.InvariantCulture) : v.ToString("0.###e0", CultureInfo.InvariantCulture);

    public void WriteJson(string path)
    {
        var json = JsonSerializer.Serialize(new
        {
            mode = Mode,
            machine = Machine,
            texts = Texts,
            ratios = Ratios,
            measurements = Measurements,
            notes = Notes,
            plots = Plots,
        }, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals });
        File.WriteAllText(path, json);
    }

    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"## Benchmark run ({Mode} mode)");
        sb.AppendLine();
        sb.AppendLine("| machine | |");
        sb.AppendLine("|---|---|");
        foreach (var (k, v) in Machine) sb.AppendLine($"| {k} | {v} |");
        sb.AppendLine($"| texts | {Texts} |");
        sb.AppendLine();
        sb.AppendLine("### Ratios");
        sb.AppendLine();
        sb.AppendLine("| ratio | value | definition | limited by |");
        sb.AppendLine("|---|---:|---|---|");
        foreach (var r in Ratios) sb.AppendLine($"| {r.Name} | {Fmt(r.Value)} | {r.Definition} | {r.Limit ?? ""} |");
        foreach (var section in Measurements.Select(m => m.Section).Distinct())
        {
            var rows = Measurements.Where(m => m.Section == section).ToList();
            var columns = rows.SelectMany(r => r.Values.Keys).Distinct().ToList();
            sb.AppendLine();
            sb.AppendLine($"### {section}");
            sb.AppendLine();
            sb.AppendLine("| configuration | " + string.Join(" | ", columns) + " | note |");
            sb.AppendLine("|---|" + string.Concat(columns.Select(_ => "---:|")) + "---|");
            foreach (var r in rows)
                sb.AppendLine($"| {r.Name} | " + string.Join(" | ", columns.Select(c => r.Values.TryGetValue(c, out var v) ? Fmt(v) : "")) + $" | {r.Note ?? ""} |");
        }
        if (Notes.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("### Notes");
            sb.AppendLine();
            foreach (var n in Notes) sb.AppendLine("- " + n);
        }
        if (Plots.Count > 0)
        {
            sb.AppendLine();
            foreach (var p in Plots) sb.AppendLine($"![{Path.GetFileNameWithoutExtension(p)}]({Path.GetFileName(p)})");
        }
        return sb.ToString();
    }
}
