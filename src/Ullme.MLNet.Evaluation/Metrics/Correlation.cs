namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// Pearson and Spearman correlation, as scipy.stats computes them for MTEB's STS tasks: Spearman is the Pearson
/// correlation of the two rank vectors, where tied values share the average of the ranks they span
/// (scipy's <c>rankdata(method="average")</c>). Sums run in double precision.
/// </summary>
public static class Correlation
{
    /// <summary>Pearson's r; NaN when either input is constant (as scipy returns).</summary>
    public static double Pearson(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        CheckLengths(x, y);
        int n = x.Count;
        if (n < 2) return double.NaN;
        double mx = 0, my = 0;
        for (int i = 0; i < n; i++) { mx += x[i]; my += y[i]; }
        mx /= n;
        my /= n;
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++)
        {
            double dx = x[i] - mx, dy = y[i] - my;
            sxy += dx * dy;
            sxx += dx * dx;
            syy += dy * dy;
        }
        if (sxx == 0 || syy == 0) return double.NaN;
        double r = sxy / Math.Sqrt(sxx * syy);
        return Math.Clamp(r, -1.0, 1.0);
    }

    /// <summary>Spearman's rho: Pearson's r of the average ranks.</summary>
    public static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        CheckLengths(x, y);
        return Pearson(AverageRanks(x), AverageRanks(y));
    }

    /// <summary>
    /// 1-based ranks in ascending order; a run of k equal values occupying ranks r..r+k-1 all get (2r+k-1)/2.
    /// Example: [10, 20, 20, 30] -> [1, 2.5, 2.5, 4].
    /// </summary>
    public static double[] AverageRanks(IReadOnlyList<double> values)
    {
        int n = values.Count;
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        // Stable sort by value (index as tie-breaker keeps it deterministic; ties get the same rank anyway).
        Array.Sort(order, (a, b) =>
        {
            int c = values[a].CompareTo(values[b]);
            return c != 0 ? c : a.CompareTo(b);
        });
        var ranks = new double[n];
        int start = 0;
        while (start < n)
        {
            int end = start + 1;
            while (end < n && values[order[end]].Equals(values[order[start]])) end++;
            double rank = (start + 1 + end) / 2.0; // average of ranks start+1 .. end
            for (int i = start; i < end; i++) ranks[order[i]] = rank;
            start = end;
        }
        return ranks;
    }

    private static void CheckLengths(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        if (x.Count != y.Count)
            throw new ArgumentException($"correlation needs equal lengths, got {x.Count} and {y.Count}");
    }
}
