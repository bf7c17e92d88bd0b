namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// Homogeneity, completeness and V-measure (Rosenberg and Hirschberg 2007) as sklearn computes them, with natural
/// logarithms: with classes C and clusters K over N items,
/// H(C) = -sum_c (n_c/N) ln(n_c/N), MI(C,K) = sum_ck (n_ck/N) ln(N n_ck / (n_c n_k)),
/// homogeneity h = MI / H(C) (1 when H(C) = 0), completeness c = MI / H(K) (1 when H(K) = 0),
/// V = 2hc / (h + c) (0 when h + c = 0).
/// </summary>
internal static class ClusteringMetrics
{
    public static (double Homogeneity, double Completeness, double VMeasure) HomogeneityCompletenessV<TClass, TCluster>(
        IReadOnlyList<TClass> classes, IReadOnlyList<TCluster> clusters)
        where TClass : notnull
        where TCluster : notnull
    {
        if (classes.Count != clusters.Count)
            throw new ArgumentException($"labels ({classes.Count}) and cluster assignments ({clusters.Count}) differ in length");
        int n = classes.Count;
        if (n == 0) return (1, 1, 1);

        var classCounts = new Dictionary<TClass, int>();
        var clusterCounts = new Dictionary<TCluster, int>();
        var joint = new Dictionary<(TClass, TCluster), int>();
        for (int i = 0; i < n; i++)
        {
            classCounts[classes[i]] = classCounts.GetValueOrDefault(classes[i]) + 1;
            clusterCounts[clusters[i]] = clusterCounts.GetValueOrDefault(clusters[i]) + 1;
            var key = (classes[i], clusters[i]);
            joint[key] = joint.GetValueOrDefault(key) + 1;
        }

        double hC = Entropy(classCounts.Values, n);
        double hK = Entropy(clusterCounts.Values, n);
        double mi = 0;
        foreach (var ((c, k), nck) in joint)
            mi += nck / (double)n * Math.Log(n * (double)nck / ((double)classCounts[c] * clusterCounts[k]));
        mi = Math.Max(mi, 0); // round-off can make an exact zero slightly negative

        double h = hC == 0 ? 1.0 : mi / hC;
        double comp = hK == 0 ? 1.0 : mi / hK;
        double v = h + comp == 0 ? 0.0 : 2 * h * comp / (h + comp);
        return (h, comp, v);
    }

    public static double VMeasure<TClass, TCluster>(IReadOnlyList<TClass> classes, IReadOnlyList<TCluster> clusters)
        where TClass : notnull
        where TCluster : notnull =>
        HomogeneityCompletenessV(classes, clusters).VMeasure;

    private static double Entropy(IEnumerable<int> counts, int n)
    {
        double h = 0;
        foreach (int c in counts)
        {
            if (c == 0) continue;
            double p = c / (double)n;
            h -= p * Math.Log(p);
        }
        return h;
    }
}
