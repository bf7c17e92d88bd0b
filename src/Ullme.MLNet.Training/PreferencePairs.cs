using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// Mines the preference pair of each query: chosen = its positive p⁺, rejected = the hard negative the policy finds
/// most likely (the highest mean token log-prob), as in grl-spec.md. Queries without negatives have no pair.
/// </summary>
internal static class PreferencePairs
{
    /// <summary>Per query with negatives: (row of p⁺, row of its most likely negative), rows of <paramref name="gen"/>.</summary>
    /// <param name="gen">The generation rows (the positive first in each query's rows).</param>
    /// <param name="means">[M] mean token log-prob of each row.</param>
    public static List<(int Chosen, int Rejected)> Mine(GenerationBatch gen, Tensor means)
    {
        var m = means.detach().to(ScalarType.Float64).cpu().data<double>().ToArray();
        var result = new List<(int, int)>();
        foreach (var rows in gen.RowsOfQuery)
        {
            if (rows.Count < 2) continue;
            int hardest = rows[1];
            for (int c = 2; c < rows.Count; c++) if (m[rows[c]] > m[hardest]) hardest = rows[c];
            result.Add((rows[0], hardest));
        }
        return result;
    }
}
