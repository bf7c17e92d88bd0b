namespace Ullme.MLNet.Evaluation;

/// <summary>MTEB task types this library evaluates.</summary>
public enum TaskType
{
    STS,
    Retrieval,
    Classification,
    Clustering,
    PairClassification,
    Reranking,
}

/// <summary>Which side of a task a text is on; decides whether the task instruction is prepended.</summary>
public enum TextRole
{
    /// <summary>Symmetric tasks (STS, pair classification, classification, clustering): every text gets the
    /// instruction.</summary>
    Symmetric,

    /// <summary>The query side of an asymmetric task (retrieval, reranking): gets the instruction.</summary>
    Query,

    /// <summary>The document side of an asymmetric task: never gets an instruction.</summary>
    Document,
}
