using Microsoft.ML;

// Outside RetriKT.MLNet on purpose: an enclosing RetriKT.MLNet namespace would bring its types into scope and hide a
// catalog extension that needs more than `using Microsoft.ML;`. Compiling this file is most of the test.
namespace CatalogUsers;

/// <summary>Every RetriKT catalog extension is reachable with the one namespace an ML.NET user already imports.</summary>
public class CatalogNamespaceTests
{
    [Fact]
    public void CatalogExtensionsNeedOnlyUsingMicrosoftML()
    {
        var ml = new MLContext(seed: 1);
        Assert.NotNull(ml.RetriKT().TextTokenizer());
        Assert.NotNull(ml.MulticlassClassification.Trainers.RetrievalClassifier());
        // Trainers that need a teacher or prompts: compiled, not run.
        Action softPrompts = () => ml.RetriKT().SoftPromptPpoTrainer("teacher", null!);
        Action extractor = () => ml.RetriKT().KnowledgeExtractor(softPrompts: null!);
        Action retriever = () => ml.RetriKT().KnowledgeRetriever(store: null!);
        Assert.All(new[] { softPrompts, extractor, retriever }, Assert.NotNull);
    }
}
