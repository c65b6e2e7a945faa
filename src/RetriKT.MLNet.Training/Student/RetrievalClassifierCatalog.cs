using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Student;
using Defaults = RetriKT.MLNet.Student.RetrievalClassifierTrainer.Options.Defaults;

// ML.NET's convention: catalog extensions live in Microsoft.ML, so `using Microsoft.ML;` alone reaches them.
namespace Microsoft.ML;

/// <summary>Adds <c>RetrievalClassifier</c> to <c>mlContext.MulticlassClassification.Trainers</c>.</summary>
public static class RetrievalClassifierCatalog
{
    /// <summary>
    /// RetriKT's student: a tiny transformer trained from scratch plus a knowledge store it retrieves from. Binary tasks
    /// use it too (two labels). The label column must be a key (MapValueToKey) or String. Settings not named here take
    /// the defaults of <see cref="RetrievalClassifierTrainer.Options"/>.
    /// </summary>
    /// <param name="catalog">The multiclass trainers catalog.</param>
    /// <param name="labelColumnName">Label column (key or String).</param>
    /// <param name="textColumnName">Text column.</param>
    /// <param name="secondTextColumnName">Second text column for sentence pairs, or null.</param>
    /// <param name="store">
    /// The knowledge store as data (Text, Text2, Label, SoftLabel, Fidelity, Source: the extractor's <c>ToDataView</c>),
    /// or null to build one from the training rows.
    /// </param>
    /// <param name="validationSet">
    /// Few-shot dev split for tuning λ and τ, or null: a given store then has a tenth of its generated entries held out
    /// to choose the epoch and the mix on (<see cref="RetrievalClassifierTrainer.Options.StoreValidationShare"/>).
    /// </param>
    /// <param name="epochs">Training passes over the store.</param>
    /// <param name="teacherParameterCount">Teacher size for the reported ratio, or null.</param>
    public static RetrievalClassifierTrainer RetrievalClassifier(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = Defaults.LabelColumnName, string textColumnName = Defaults.TextColumnName, string? secondTextColumnName = null,
        IDataView? store = null, IDataView? validationSet = null, int epochs = Defaults.Epochs, long? teacherParameterCount = null)
        => new(MlNetEnvironment.Of(catalog ?? throw new ArgumentNullException(nameof(catalog))), new RetrievalClassifierTrainer.Options
        {
            LabelColumnName = labelColumnName,
            TextColumnName = textColumnName,
            SecondTextColumnName = secondTextColumnName,
            StoreData = store,
            ValidationSet = validationSet,
            Epochs = epochs,
            TeacherParameterCount = teacherParameterCount,
        });

    /// <summary>The retrieval classifier with all options.</summary>
    public static RetrievalClassifierTrainer RetrievalClassifier(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        RetrievalClassifierTrainer.Options options)
        => new(MlNetEnvironment.Of(catalog ?? throw new ArgumentNullException(nameof(catalog))), options ?? throw new ArgumentNullException(nameof(options)));
}
