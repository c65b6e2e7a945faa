using Microsoft.Extensions.AI;
using RetriKT.MLNet;
using RetriKT.MLNet.BlackBox;
using RetriKT.MLNet.SoftPrompt;

// ML.NET's convention: catalog extensions live in Microsoft.ML, so `using Microsoft.ML;` alone reaches them.
namespace Microsoft.ML;

/// <summary><c>mlContext.RetriKT().BlackBoxKnowledgeExtractor(...)</c>.</summary>
public static class BlackBoxCatalog
{
    /// <summary>
    /// Knowledge extraction from LLM endpoints: <paramref name="teachers"/> (one <see cref="IChatClient"/> per server or
    /// deployment) generate <paramref name="samplesPerLabel"/> samples per label for <paramref name="template"/>; the
    /// other settings take the defaults of <see cref="BlackBoxExtractorOptions"/>.
    /// </summary>
    public static BlackBoxKnowledgeExtractor BlackBoxKnowledgeExtractor(this RetriKTCatalog catalog, IEnumerable<IChatClient> teachers, TaskTemplate template,
        int samplesPerLabel = BlackBoxExtractorOptions.Defaults.SamplesPerLabel)
    {
        ArgumentNullException.ThrowIfNull(teachers);
        return catalog.BlackBoxKnowledgeExtractor(new BlackBoxExtractorOptions
        {
            Teachers = teachers.Select(c => new TeacherEndpoint(c)).ToList(), Template = template, SamplesPerLabel = samplesPerLabel,
        });
    }

    /// <summary>Knowledge extraction from LLM endpoints with all settings.</summary>
    public static BlackBoxKnowledgeExtractor BlackBoxKnowledgeExtractor(this RetriKTCatalog catalog, BlackBoxExtractorOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new BlackBoxKnowledgeExtractor(catalog.Environment, options);
    }
}
