using Microsoft.ML;
using RetriKT.MLNet.Bridge;

namespace RetriKT.MLNet.Student;

/// <summary>Adds <c>RetrievalClassifier</c> to <c>mlContext.MulticlassClassification.Trainers</c>.</summary>
public static class RetrievalClassifierCatalog
{
    /// <summary>
    /// RetriKT's student: a tiny transformer trained from scratch plus a knowledge store it retrieves from. Binary tasks
    /// use it too (two labels). The label column must be a key (MapValueToKey) or String.
    /// </summary>
    /// <param name="catalog">The multiclass trainers catalog.</param>
    /// <param name="labelColumnName">Label column (key or String).</param>
    /// <param name="textColumnName">Text column.</param>
    /// <param name="secondTextColumnName">Second text column for sentence pairs, or null.</param>
    /// <param name="store">Knowledge store (teacher-generated samples with soft labels), or null to build one from the training rows.</param>
    /// <param name="validationSet">Few-shot dev split for tuning λ and τ, or null.</param>
    /// <param name="epochs">Training passes over the store.</param>
    /// <param name="teacherParameterCount">Teacher size for the reported ratio, or null.</param>
    public static RetrievalClassifierTrainer RetrievalClassifier(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label", string textColumnName = "Text", string? secondTextColumnName = null,
        Knowledge.KnowledgeStore? store = null, IDataView? validationSet = null, int epochs = 40, long? teacherParameterCount = null)
        => new(MlNetEnvironment.Of(catalog ?? throw new ArgumentNullException(nameof(catalog))), new RetrievalClassifierTrainer.Options
        {
            LabelColumnName = labelColumnName,
            TextColumnName = textColumnName,
            SecondTextColumnName = secondTextColumnName,
            Store = store,
            ValidationSet = validationSet,
            Epochs = epochs,
            TeacherParameterCount = teacherParameterCount,
        });

    /// <summary>The retrieval classifier with all options.</summary>
    public static RetrievalClassifierTrainer RetrievalClassifier(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        RetrievalClassifierTrainer.Options options)
        => new(MlNetEnvironment.Of(catalog ?? throw new ArgumentNullException(nameof(catalog))), options ?? throw new ArgumentNullException(nameof(options)));
}
